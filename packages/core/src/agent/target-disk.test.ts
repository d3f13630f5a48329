import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ProcessRunner } from '../util/process.ts';
import { ImgctlError } from '../util/errors.ts';
import {
  checkSeparate,
  checkTarget,
  devNumber,
  HEAD_BYTES,
  hashRegion,
  type HostTables,
  inspectTarget,
  openForWriting,
  openTargetWriter,
  parseMountinfo,
  parseSwaps,
  type TargetFs,
} from './target-disk.ts';

const MiB = 1024 * 1024;
const realRunner: ProcessRunner = {
  run: async (file, args, options) => {
    const r = await execa(file, args, { input: options?.input });
    return { stdout: String(r.stdout), stderr: String(r.stderr) };
  },
};

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'target-disk-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * A fake /sys with one disk `sdz` (8:240) and its partitions sdz1 (8:241), sdz2 (8:242), plus
 * the machine's real-looking root disk vdq (254:16). `fs` makes /dev/sdz a block device 8:240,
 * which the kernel reports busy when `busy` names it.
 */
async function fakeHost(
  mountinfo: string,
  swaps = 'Filename Type Size Used Priority\n',
  busy: string[] = [],
) {
  const sys = join(dir, 'sys');
  const disk = join(sys, 'devices/pci0/block/sdz');
  const other = join(sys, 'devices/pci1/block/vdq');
  for (const [d, devno] of [
    [disk, '8:240'],
    [join(disk, 'sdz1'), '8:241'],
    [join(disk, 'sdz2'), '8:242'],
    [other, '254:16'],
  ] as const) {
    await mkdir(join(d, 'holders'), { recursive: true });
    await writeFile(join(d, 'dev'), `${devno}\n`);
    if (/sdz\d$/.test(d)) await writeFile(join(d, 'partition'), '1\n');
    await mkdir(join(sys, 'dev/block'), { recursive: true });
    await symlink(d, join(sys, 'dev/block', devno));
  }
  const tables: HostTables = {
    mountinfo: join(dir, 'mountinfo'),
    swaps: join(dir, 'swaps'),
    sysfs: sys,
  };
  await writeFile(tables.mountinfo, mountinfo);
  await writeFile(tables.swaps, swaps);
  const rdev = (major: number, minor: number) => major * 256 + minor;
  const devices: Record<string, number> = {
    '/dev/sdz': rdev(8, 240),
    '/dev/sdz1': rdev(8, 241),
    '/dev/sdz2': rdev(8, 242),
  };
  const fs: TargetFs = {
    realpath: async (p) => {
      if (devices[p] === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      return p;
    },
    stat: async (p) => {
      if (devices[p] === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      return { isBlockDevice: () => true, isFile: () => false, rdev: devices[p], size: 0 };
    },
    busy: async (p) => busy.includes(p),
  };
  // blockdev says 8 GiB; sfdisk and blkid find nothing on it.
  const runner: ProcessRunner = {
    run: async (file) => {
      if (file === 'blockdev') return { stdout: `${8 * 1024 * MiB}\n` };
      throw Object.assign(new Error(`${file} failed`), { exitCode: 2 });
    },
  };
  return { tables, fs, runner, disk };
}

const line = (devno: string, mountPoint: string, source: string) =>
  `30 1 ${devno} / ${mountPoint} rw,relatime shared:1 - ext4 ${source} rw\n`;

describe('inspectTarget: in use by this machine', () => {
  it('refuses the disk that carries the running root filesystem (a faked mount table)', async () => {
    const host = await fakeHost(line('8:242', '/', '/dev/sdz2') + line('0:21', '/proc', 'proc'));
    const info = await inspectTarget('/dev/sdz', host);
    expect(info).toMatchObject({
      kind: 'block',
      device: 'sdz',
      devno: '8:240',
      size: 8 * 1024 * MiB,
    });
    expect(info.inUse).toEqual([
      '/dev/sdz2 is mounted at / (/dev/sdz2)',
      'it carries the running root filesystem (/ is /dev/sdz2)',
    ]);
    const refuse = () =>
      checkTarget(info, { needBytes: MiB, needWhat: 'x', namedBySystem: true, force: true });
    expect(refuse).toThrowError(ImgctlError);
    expect(refuse).toThrowError(/in use by this machine/);
    try {
      refuse();
    } catch (error) {
      expect((error as ImgctlError).exitCode).toBe(5);
    }
  });

  it('refuses a disk whose partition backs swap or is held by LVM/md; accepts another disk', async () => {
    const host = await fakeHost(
      line('254:16', '/', '/dev/vdq'),
      'Filename Type Size Used Priority\n/dev/sdz1 partition 1024 0 -2\n',
    );
    await mkdir(join(host.disk, 'sdz2/holders/dm-3'), { recursive: true });
    const info = await inspectTarget('/dev/sdz', host);
    expect(info.inUse).toEqual([
      '/dev/sdz1 is in use as swap',
      '/dev/sdz2 is held by /dev/dm-3 (LVM, md RAID or device-mapper)',
    ]);
  });

  it('accepts a disk nothing of this machine uses; two disks never go into one another', async () => {
    const host = await fakeHost(line('254:16', '/', '/dev/vdq'));
    const sdz = await inspectTarget('/dev/sdz', host);
    const sdz1 = await inspectTarget('/dev/sdz1', host);
    const sdz2 = await inspectTarget('/dev/sdz2', host);
    expect(sdz).toMatchObject({ inUse: [], wholeDisk: 'sdz' });
    expect(sdz1).toMatchObject({ device: 'sdz1', wholeDisk: 'sdz' });
    expect(() => checkSeparate(['root', sdz], ['data', sdz2])).toThrowError(
      /disks 'root' and 'data' overlap: \/dev\/sdz2 is a partition of \/dev\/sdz/,
    );
    expect(() => checkSeparate(['root', sdz2], ['data', sdz])).toThrowError(/overlap/);
    expect(() => checkSeparate(['root', sdz], ['data', sdz])).toThrowError(/both go to/);
    expect(() => checkSeparate(['a', sdz1], ['b', sdz2])).not.toThrow();
  });

  it('refuses a root on a device-mapper volume whose slave is a partition of the target', async () => {
    const host = await fakeHost(line('253:0', '/', '/dev/mapper/vg-root'));
    const dm = join(dir, 'sys/devices/virtual/block/dm-0');
    await mkdir(join(dm, 'slaves'), { recursive: true });
    await writeFile(join(dm, 'dev'), '253:0\n');
    await symlink(join(host.disk, 'sdz1'), join(dm, 'slaves/sdz1'));
    await symlink(dm, join(dir, 'sys/dev/block/253:0'));
    const info = await inspectTarget('/dev/sdz', host);
    expect(info.inUse).toContain(
      'it carries the running root filesystem (/ is /dev/mapper/vg-root)',
    );
  });

  it('sees a btrfs mount and root by their source device (mountinfo says 0:N)', async () => {
    const btrfs = (mountPoint: string, source: string) =>
      `40 1 0:45 / ${mountPoint} rw,relatime shared:1 - btrfs ${source} rw,subvol=/@\n`;
    const host = await fakeHost(btrfs('/', '/dev/sdz2') + btrfs('/home', '/dev/sdz2'));
    expect((await inspectTarget('/dev/sdz', host)).inUse).toEqual([
      '/dev/sdz2 is mounted at / (/dev/sdz2)',
      '/dev/sdz2 is mounted at /home (/dev/sdz2)',
      'it carries the running root filesystem (/ is /dev/sdz2)',
    ]);
  });

  it('refuses every device of a mounted multi-device btrfs, not only the one mountinfo names', async () => {
    const host = await fakeHost(
      line('254:16', '/', '/dev/vdq') + '41 1 0:46 / /data rw - btrfs /dev/vdq rw,subvol=/\n',
    );
    const devices = join(dir, 'sys/fs/btrfs/5f2c-fsid/devices');
    await mkdir(devices, { recursive: true });
    await symlink(join(host.disk, 'sdz2'), join(devices, 'sdz2'));
    await symlink(join(dir, 'sys/devices/pci1/block/vdq'), join(devices, 'vdq'));
    expect((await inspectTarget('/dev/sdz', host)).inUse).toEqual([
      '/dev/sdz2 is a device of the mounted btrfs filesystem 5f2c-fsid',
    ]);
  });

  it('refuses a disk the kernel reports busy though no table names a holder (a ZFS pool member)', async () => {
    const host = await fakeHost(line('254:16', '/', '/dev/vdq'), undefined, ['/dev/sdz']);
    const info = await inspectTarget('/dev/sdz', host);
    expect(info.inUse).toEqual([expect.stringMatching(/^the kernel reports it busy/)]);
    expect(() =>
      checkTarget(info, { needBytes: MiB, needWhat: 'x', namedBySystem: true, force: true }),
    ).toThrowError(/in use by this machine/);
  });

  it('refuses a target without a sysfs entry: nothing tells whether it is in use', async () => {
    const host = await fakeHost(line('254:16', '/', '/dev/vdq'));
    const tables = { ...host.tables, sysfs: join(dir, 'nosys') };
    await expect(inspectTarget('/dev/sdz', { ...host, tables })).rejects.toThrowError(
      /cannot tell whether target disk \/dev\/sdz is in use/,
    );
  });

  it('refuses every disk while the root device cannot be resolved', async () => {
    const host = await fakeHost('40 1 0:45 / / rw - btrfs /dev/nvme9n1p2 rw\n');
    expect((await inspectTarget('/dev/sdz', host)).inUse).toEqual([
      'cannot tell which disk carries the running root filesystem (/ is /dev/nvme9n1p2)',
    ]);
  });

  it('a missing target is NOT_FOUND, never created', async () => {
    const host = await fakeHost('');
    await expect(inspectTarget('/dev/sdx', host)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('inspectTarget: files', () => {
  it('reads the partition table and labels of a file; refuses it unless named or forced; too small is HOST', async () => {
    const file = join(dir, 'disk.raw');
    await execa('truncate', ['-s', '32M', file]);
    await execa('sfdisk', ['--quiet', file], {
      input: 'label: dos\nstart=2048, size=16384, type=c\n',
    });
    await execa('mkfs.vfat', ['--offset', '2048', '-n', 'BOOTME', file, '8192']);
    const tables = {
      mountinfo: join(dir, 'none'),
      swaps: join(dir, 'none'),
      sysfs: join(dir, 'none'),
    };
    const info = await inspectTarget(file, { runner: realRunner, tables });
    expect(info).toMatchObject({ kind: 'file', size: 32 * MiB, partitionTable: 'dos', inUse: [] });
    expect(info.partitions).toEqual([
      { number: 1, start: MiB, size: 8 * MiB, type: 'c', filesystem: 'vfat', label: 'BOOTME' },
    ]);
    const req = { needBytes: 16 * MiB, needWhat: 'the image', namedBySystem: false, force: false };
    expect(() => checkTarget(info, req)).toThrowError(
      /is not empty: dos partition table, 1 partition\(s\); partition 1: 8MiB at 1MiB vfat 'BOOTME'/,
    );
    expect(() => checkTarget(info, { ...req, force: true })).not.toThrow();
    expect(() => checkTarget(info, { ...req, namedBySystem: true })).not.toThrow();
    let code = 0;
    try {
      checkTarget(info, { ...req, force: true, needBytes: 64 * MiB });
    } catch (error) {
      code = (error as ImgctlError).exitCode;
      expect((error as Error).message).toMatch(/too small: 32MiB, the image need 64MiB/);
    }
    expect(code).toBe(6);
  });

  it('a file attached to a loop device is in use', async () => {
    const file = join(dir, 'disk.raw');
    await writeFile(file, Buffer.alloc(MiB));
    const sys = join(dir, 'sys');
    await mkdir(join(sys, 'block/loop7/loop'), { recursive: true });
    await writeFile(join(sys, 'block/loop7/loop/backing_file'), `${file}\n`);
    const tables = { mountinfo: join(dir, 'none'), swaps: join(dir, 'none'), sysfs: sys };
    const info = await inspectTarget(file, { runner: realRunner, tables });
    expect(info.inUse).toEqual(['it backs the loop device /dev/loop7']);
  });
});

describe('the kernel tables', () => {
  it('parses mountinfo (escaped spaces, optional fields) and /proc/swaps', () => {
    expect(
      parseMountinfo('36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw\n'),
    ).toEqual([{ devno: '98:0', mountPoint: '/mnt/my disk', source: '/dev/root' }]);
    expect(parseSwaps('Filename Type Size Used Priority\n/swap\\040file file 10 0 -2\n')).toEqual([
      '/swap file',
    ]);
    expect(devNumber(7 * 256 + 3)).toBe('7:3');
  });
});

describe('openTargetWriter on a file', () => {
  it('skips zero blocks as holes, holds the first MiB back until finish, and reads back the hash', async () => {
    const file = join(dir, 'target.raw');
    await writeFile(file, randomBytes(12 * MiB)); // old content everywhere
    const image = Buffer.alloc(8 * MiB);
    randomBytes(4096).copy(image, 0); // the partition table and boot code
    randomBytes(MiB).copy(image, 5 * MiB);
    const info = await inspectTarget(file, {
      runner: realRunner,
      tables: { mountinfo: join(dir, 'x'), swaps: join(dir, 'x'), sysfs: join(dir, 'x') },
    });
    const writer = await openTargetWriter(
      info,
      await openForWriting(info),
      image.length,
      realRunner,
    );
    expect(writer.skipsZeros).toBe(true);
    for (let off = 0; off < image.length; off += 3 * MiB + 512)
      await writer.write(image.subarray(off, off + 3 * MiB + 512), off);
    // Until finish the head reads as zeros: a cut-off write leaves no partition table.
    const head = (await readFile(file)).subarray(0, HEAD_BYTES);
    expect(head.equals(Buffer.alloc(HEAD_BYTES))).toBe(true);
    const readBack = await writer.finish();
    expect(writer.stats.written).toBeLessThan(2 * MiB + 64 * 1024 * 2);
    expect(writer.stats.written + writer.stats.skipped).toBe(image.length);
    const expected = createHash('sha256').update(image).digest('hex');
    expect(readBack).toBe(expected);
    expect(await hashRegion(file, image.length)).toBe(expected);
    // What lies after the image is untouched; the zeros inside it take no space.
    const after = await readFile(file);
    expect(after.length).toBe(12 * MiB);
    expect((await stat(file)).blocks * 512).toBeLessThan(6 * MiB);
  });
});
