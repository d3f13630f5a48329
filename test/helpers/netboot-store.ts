/**
 * A store ready for network boots, for the server's netboot tests: the base store (image web,
 * systems web01 and web02) with web's system disk in .blobs/, a ramdisk/ramdisk.yaml naming a
 * kernel and an initrd of random bytes in .blobs/, and `netboot=true` set on web01 the way a
 * user sets it (`imgctl system set`).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BASE_TREE, WEB01_SYSTEM } from './base-store.ts';
import { makeStore, runCli, type TempDir } from './index.ts';

/** web01's interface; web02 has ...:57 */
export const WEB01_MAC = '52:54:00:12:34:56';
export const WEB02_MAC = '52:54:00:12:34:57';
export const RAMDISK_CMDLINE = 'console=ttyS0,115200 panic=10';
/** the first line of systems/web01.yaml: an edit must keep it */
export const WEB01_COMMENT = '# the first web server, rack 3';

export interface NetbootStore extends TempDir {
  kernel: Buffer;
  initrd: Buffer;
  /** web's system disk */
  disk: Buffer;
  sha256(content: Buffer): string;
}

async function putBlob(storeDir: string, content: Buffer): Promise<string> {
  const hex = createHash('sha256').update(content).digest('hex');
  const file = join(storeDir, '.blobs/sha256', hex.slice(0, 2), hex);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, content);
  return hex;
}

/** Runs imgctl on the store; throws with its stderr when it fails. */
export async function imgctl(storeDir: string, ...args: string[]): Promise<string> {
  const r = await runCli([...args, '--store', storeDir]);
  if (r.exitCode !== 0) throw new Error(`imgctl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

export async function makeNetbootStore(): Promise<NetbootStore> {
  const store = await makeStore({
    ...BASE_TREE,
    'systems/web01.yaml': `${WEB01_COMMENT}\n${WEB01_SYSTEM}target_disk: /dev/vda\n`,
  });
  const kernel = randomBytes(300 * 1024 + 7);
  const initrd = randomBytes(200 * 1024 + 3);
  const disk = randomBytes(64 * 1024);
  const [k, i, d] = [
    await putBlob(store.dir, kernel),
    await putBlob(store.dir, initrd),
    await putBlob(store.dir, disk),
  ];
  await mkdir(join(store.dir, 'ramdisk'));
  await writeFile(
    join(store.dir, 'ramdisk/ramdisk.yaml'),
    [
      'apiVersion: imgctl/v1',
      'kind: Ramdisk',
      `kernel: {sha256: "${k}", size: ${kernel.length}}`,
      `initrd: {sha256: "${i}", size: ${initrd.length}}`,
      `cmdline: "${RAMDISK_CMDLINE}"`,
      `built: {at: "2026-01-05T10:00:00Z", recipe_sha256: "${'0'.repeat(64)}"}`,
      '',
    ].join('\n'),
  );
  await imgctl(store.dir, 'image', 'set', 'web', `disks[0].sha256=${d}`, 'disks[0].blob=true');
  await imgctl(store.dir, 'system', 'set', 'web01', 'netboot=true');
  return {
    ...store,
    kernel,
    initrd,
    disk,
    sha256: (content) => createHash('sha256').update(content).digest('hex'),
  };
}
