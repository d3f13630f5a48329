/**
 * What the agent benchmarks provision from: copies of the example store with disks of their
 * own, and the single-file agent.
 */
import { rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const IMGCTL = join(ROOT, 'packages/cli/bin/imgctl.js');

export interface BenchDisk {
  id: string;
  use: 'system' | 'data' | 'scratch';
  file: string;
}

/**
 * Copies the example store to `dir` without its blobs and gives its tiny-linux image `disks`
 * (added with `imgctl disk add`, so the descriptor and revision stay consistent).
 */
export async function exampleStoreWith(dir: string, disks: BenchDisk[]): Promise<string> {
  await execa('cp', ['-r', join(ROOT, 'image-store'), dir]);
  await rm(join(dir, '.blobs'), { recursive: true, force: true });
  for (const disk of disks)
    await execa(process.execPath, [
      IMGCTL,
      '--store',
      dir,
      'disk',
      'add',
      'tiny-linux',
      '--id',
      disk.id,
      '--use',
      disk.use,
      disk.file,
    ]);
  return dir;
}

/** Bundles the agent into `outdir` as targets run it (scripts/build.mjs); its path. */
export async function bundleAgent(outdir: string): Promise<string> {
  await execa(process.execPath, [
    join(ROOT, 'scripts/build.mjs'),
    '--outdir',
    outdir,
    '--only',
    'imgagent',
  ]);
  return join(outdir, 'imgagent.mjs');
}
