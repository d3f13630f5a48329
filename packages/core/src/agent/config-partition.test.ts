import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ProcessRunner } from '../util/process.ts';
import { addConfigPartition, CONFIG_PARTITION_BYTES } from './config-partition.ts';

const MiB = 1024 * 1024;
const PATH = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin';
const runner: ProcessRunner = {
  run: async (file, args, options) => {
    const r = await execa(file, args, { input: options?.input, env: options?.env });
    return { stdout: String(r.stdout), stderr: String(r.stderr) };
  },
};
const seed = {
  'meta-data': 'instance-id: tiny01-0badcafe\nlocal-hostname: tiny01\n',
  'user-data': '#cloud-config\nhostname: tiny01\n',
  'network-config': 'version: 2\nethernets: {}\n',
};

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'config-partition-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A disk file of `size` MiB whose table (sfdisk script) is `table`. */
async function disk(size: number, table: string, grow?: number): Promise<string> {
  const file = join(dir, 'disk.raw');
  await execa('truncate', ['-s', `${size}M`, file]);
  if (table) await execa('sfdisk', ['--quiet', file], { input: table });
  if (grow) await execa('truncate', ['-s', `${grow}M`, file]);
  return file;
}

async function table(file: string) {
  return (
    JSON.parse((await execa('sfdisk', ['--json', file])).stdout) as {
      partitiontable: {
        label: string;
        lastlba?: number;
        partitions: Array<{ start: number; size: number; type: string; name?: string }>;
      };
    }
  ).partitiontable;
}

const options = () => ({ runner, diskSize: 0, tmpDir: dir, path: PATH });

describe('addConfigPartition', () => {
  it('appends a vfat cidata partition after an MBR image and puts the seed on it', async () => {
    // 2 GiB (sparse): mkfs.vfat must not pick FAT32 from the disk's size for a 4 MiB partition
    const file = await disk(2048, 'label: dos\nstart=2048, size=129024, type=6, bootable\n');
    const added = await addConfigPartition(file, seed, { ...options(), diskSize: 2048 * MiB });
    expect(added).toEqual({
      table: 'dos',
      number: 2,
      start: 64 * MiB,
      size: CONFIG_PARTITION_BYTES,
    });
    const t = await table(file);
    expect(t.partitions[1]).toMatchObject({ start: 131072, size: 8192, type: '1' });
    const probe = await execa('blkid', ['-p', '-o', 'export', '--offset', String(64 * MiB), file]);
    expect(probe.stdout).toMatch(/^TYPE=vfat$/m);
    expect(probe.stdout).toMatch(/^VERSION=FAT12$/m);
    expect(probe.stdout).toMatch(/^LABEL=cidata$/m);
    const env = { PATH, MTOOLS_SKIP_CHECK: '1' };
    for (const [name, text] of Object.entries(seed)) {
      const read = await execa('mtype', ['-i', `${file}@@${64 * MiB}`, `::/${name}`], { env });
      expect(read.stdout).toBe(text.trimEnd());
    }
  });

  it('moves a GPT backup table to the end of a larger disk and names the partition cidata', async () => {
    const file = await disk(40, 'label: gpt\nstart=2048, size=40000\n', 80);
    const added = await addConfigPartition(file, seed, { ...options(), diskSize: 80 * MiB });
    expect(added).toMatchObject({ table: 'gpt', number: 2, start: 21 * MiB });
    const t = await table(file);
    expect(t.lastlba).toBe(80 * 2048 - 34);
    expect(t.partitions[1]).toMatchObject({
      start: 43008,
      type: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
      name: 'cidata',
    });
    const verify = await execa('sfdisk', ['--verify', file], { reject: false });
    expect(verify.stdout).toMatch(/No errors detected/);
    expect(verify.stderr).not.toMatch(/backup GPT table is not on the end/);
  });

  it('refuses an image without a partition table, a full MBR and a disk with no room left', async () => {
    const bare = await disk(16, '');
    await expect(
      addConfigPartition(bare, seed, { ...options(), diskSize: 16 * MiB }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
    });
    const four = await disk(32, 'label: dos\nsize=4096\nsize=4096\nsize=4096\nsize=4096\n');
    await expect(
      addConfigPartition(four, seed, { ...options(), diskSize: 32 * MiB }),
    ).rejects.toThrow(/already has 4 partitions/);
    const full = await disk(16, 'label: dos\nstart=2048, size=30000\n');
    await expect(
      addConfigPartition(full, seed, { ...options(), diskSize: 16 * MiB }),
    ).rejects.toThrow(/no room for the 4MiB config partition/);
  });
});
