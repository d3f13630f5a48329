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

/** `imgctl --store STORE ARGS…` as a user runs it; its output. */
export function imgctl(store: string, args: string[]) {
  return execa(process.execPath, [IMGCTL, '--store', store, ...args]);
}

/** Adds `disks` to `image` with `imgctl disk add`; their sha256 by id. */
async function addDisks(
  store: string,
  image: string,
  disks: BenchDisk[],
): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  for (const disk of disks) {
    const added = await imgctl(store, [
      ...['disk', 'add', image, '--id', disk.id, '--use', disk.use, disk.file, '--json'],
    ]);
    digests[disk.id] = (JSON.parse(added.stdout) as { disk: { sha256: string } }).disk.sha256;
  }
  return digests;
}

/**
 * Copies the example store to `dir` without its blobs and gives its tiny-linux image `disks`
 * (added with `imgctl disk add`, so the descriptor and revision stay consistent).
 */
export async function exampleStoreWith(dir: string, disks: BenchDisk[]): Promise<string> {
  await execa('cp', ['-r', join(ROOT, 'image-store'), dir]);
  await rm(join(dir, '.blobs'), { recursive: true, force: true });
  await addDisks(dir, 'tiny-linux', disks);
  return dir;
}

/** A new image `name` like `source` (`imgctl image copy`) with `disks`; their sha256 by id. */
export async function copyImageWith(
  store: string,
  source: string,
  name: string,
  disks: BenchDisk[],
): Promise<Record<string, string>> {
  await imgctl(store, ['image', 'copy', source, name]);
  return addDisks(store, name, disks);
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
