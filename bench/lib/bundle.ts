/** Bundling a bench's helper script as the binaries are bundled, to run with plain node. */
import { build } from 'esbuild';

/** Bundles `entry` (TypeScript importing @imgctl/core) into the single ESM file `outfile`. */
export async function bundleScript(entry: string, outfile: string): Promise<string> {
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
    // CommonJS dependencies (yaml) call require: give them one, as scripts/build.mjs does
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
  });
  return outfile;
}
