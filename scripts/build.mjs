#!/usr/bin/env node
// Bundles each binary into one file plain node (>= 20.19) runs: dist/imgctl.mjs, dist/imgagent.mjs.
// The JSON schemas are inlined; CommonJS dependencies get a `require` through createRequire.
// `--outdir DIR` writes elsewhere (tests); files are replaced atomically, so a build running
// next to a process executing the old bundle never leaves it a half-written file.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outdirFlag = process.argv.indexOf('--outdir');
const outdir =
  outdirFlag > 0 ? resolve(process.argv[outdirFlag + 1] ?? 'dist') : join(root, 'dist');
// `--only imgagent`: one binary (tests build the agent alone this way)
const onlyFlag = process.argv.indexOf('--only');
const only = onlyFlag > 0 ? process.argv[onlyFlag + 1] : undefined;

const BANNER = [
  '#!/usr/bin/env node',
  "import { createRequire as __imgctlCreateRequire } from 'node:module';",
  'const require = __imgctlCreateRequire(import.meta.url);',
].join('\n');

/** Each binary: the module exporting runBin, and the bundle it becomes. */
const binaries = [
  { name: 'imgctl', entry: 'packages/cli/src/bin.ts', out: 'imgctl.mjs' },
  { name: 'imgagent', entry: 'packages/agent/src/bin.ts', out: 'imgagent.mjs', optional: true },
];

mkdirSync(outdir, { recursive: true });
for (const bin of binaries.filter((b) => only === undefined || b.name === only)) {
  const entry = join(root, bin.entry);
  if (!existsSync(entry)) {
    if (bin.optional) continue;
    throw new Error(`missing ${bin.entry}`);
  }
  const outfile = join(outdir, bin.out);
  const result = await build({
    // bin.ts exports runBin without calling it (the source entry and tests import it), so the
    // bundle's entry is a two-line module that runs it.
    stdin: {
      contents: `import { runBin } from './${relative(root, entry)}';\nawait runBin();\n`,
      resolveDir: root,
      sourcefile: `${bin.name}-entry.ts`,
      loader: 'ts',
    },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile,
    banner: { js: BANNER },
    loader: { '.json': 'json' },
    // ssh2's native add-ons are optional (required inside try/catch): the bundle runs without
    // them on its pure-JS crypto, so they stay out of it.
    external: ['cpu-features', '*.node'],
    legalComments: 'none',
    logLevel: 'warning',
    write: false,
  });
  const [output] = result.outputFiles;
  const tmp = `${outfile}.tmp-${process.pid}`;
  writeFileSync(tmp, output.contents);
  chmodSync(tmp, 0o755);
  renameSync(tmp, outfile);
  console.error(`built ${relative(root, outfile)}`);
}

if (only !== undefined && only !== 'imgctl') process.exit(0);
const version = execFileSync(process.execPath, [join(outdir, 'imgctl.mjs'), '--version'], {
  encoding: 'utf8',
}).trim();
if (!/^\d+\.\d+\.\d+/.test(version))
  throw new Error(`dist/imgctl.mjs --version printed '${version}'`);
console.error(`${relative(root, join(outdir, 'imgctl.mjs'))} --version: ${version}`);
