#!/usr/bin/env node
// Bundles each binary into one file plain node (>= 20.19) runs: dist/imgctl.mjs, dist/imgagent.mjs;
// and the agent once more as a single executable that embeds this Node, for targets without one:
// dist/imgagent-linux-x64 (Node's single-executable applications; the blob injected by postject).
// The JSON schemas are inlined; CommonJS dependencies get a `require` through createRequire.
// `--outdir DIR` writes elsewhere (tests); files are replaced atomically, so a build running
// next to a process executing the old bundle never leaves it a half-written file.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outdirFlag = process.argv.indexOf('--outdir');
const outdir =
  outdirFlag > 0 ? resolve(process.argv[outdirFlag + 1] ?? 'dist') : join(root, 'dist');
// `--only imgagent`: one binary (tests build the agent alone this way);
// `--only imgagent-linux-x64`: the agent with Node inside, alone
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

if (only === undefined || only === 'imgagent-linux-x64') await buildAgentExecutable();

if (only !== undefined && only !== 'imgctl') process.exit(0);
const version = execFileSync(process.execPath, [join(outdir, 'imgctl.mjs'), '--version'], {
  encoding: 'utf8',
}).trim();
if (!/^\d+\.\d+\.\d+/.test(version))
  throw new Error(`dist/imgctl.mjs --version printed '${version}'`);
console.error(`${relative(root, join(outdir, 'imgctl.mjs'))} --version: ${version}`);

/**
 * dist/imgagent-linux-x64: this Node with the agent inside. A single-executable application of
 * Node 20 runs one CommonJS script, so the agent is bundled again as CommonJS (no top-level
 * await: the entry calls runBin). The executable is checked to start before it replaces the old.
 */
async function buildAgentExecutable() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return;
  const work = join(outdir, `.sea-${process.pid}`);
  mkdirSync(work, { recursive: true });
  try {
    const script = join(work, 'imgagent.cjs');
    await build({
      stdin: {
        contents:
          "import { runBin } from './packages/agent/src/bin.ts';\n" +
          'runBin().catch((error) => { console.error(error); process.exitCode = 70; });\n',
        resolveDir: root,
        sourcefile: 'imgagent-sea-entry.ts',
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      outfile: script,
      loader: { '.json': 'json' },
      external: ['cpu-features', '*.node'],
      legalComments: 'none',
      logLevel: 'warning',
    });
    const config = join(work, 'sea-config.json');
    const blob = join(work, 'imgagent.blob');
    // Paths relative to `work`: the blob keeps `main` as written, and an absolute one (with the
    // pid in it) would make every build's bytes differ (the provisioning ramdisk caches on them).
    writeFileSync(
      config,
      JSON.stringify({
        main: 'imgagent.cjs',
        output: 'imgagent.blob',
        disableExperimentalSEAWarning: true,
      }),
    );
    execFileSync(process.execPath, ['--experimental-sea-config', config], {
      cwd: work,
      stdio: 'ignore',
    });
    const exe = join(work, 'imgagent-linux-x64');
    copyFileSync(process.execPath, exe);
    chmodSync(exe, 0o755);
    execFileSync(
      process.execPath,
      [
        join(root, 'node_modules/postject/dist/cli.js'),
        exe,
        'NODE_SEA_BLOB',
        blob,
        '--sentinel-fuse',
        'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
      ],
      { stdio: 'ignore' },
    );
    const version = execFileSync(exe, ['--version'], { encoding: 'utf8' }).trim();
    if (!/^\d+\.\d+\.\d+/.test(version))
      throw new Error(`imgagent-linux-x64 --version printed '${version}'`);
    const outfile = join(outdir, 'imgagent-linux-x64');
    renameSync(exe, outfile);
    console.error(`built ${relative(root, outfile)} (Node ${process.versions.node} inside)`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
