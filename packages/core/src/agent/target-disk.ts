/**
 * The disk (or file) `imgagent --replace-self` writes over (docs/agent.md): what is on it now,
 * whether it is in use by this machine, and the writer that puts a raw image on it.
 *
 * "In use" comes from the kernel's own tables: /proc/self/mountinfo (mounts, and which device
 * holds `/`), /proc/swaps, /sys/class/block/<dev>/holders (LVM, md, dm-crypt), btrfs's device
 * lists and the loop devices' backing files; and, when none of them names a holder, from an
 * exclusive open of the device, which the kernel refuses while anything has claimed it. The
 * tables' locations are injectable (`HostTables`) so unit tests can fake a mount table; a test
 * never points at the machine's real disks.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, open, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { ProcessRunner } from '../util/process.ts';
import { run } from './steps.ts';
import { writeFully, writeNonZero } from '../disks/blobs.ts';
import { ImgctlError } from '../util/errors.ts';
import { formatSize } from '../util/sizes.ts';

/** Where the kernel's tables are read from; the real ones by default. */
export interface HostTables {
  mountinfo: string;
  swaps: string;
  sysfs: string;
}

const HOST_TABLES: HostTables = {
  mountinfo: '/proc/self/mountinfo',
  swaps: '/proc/swaps',
  sysfs: '/sys',
};

export interface TargetPartition {
  /** 1-based, in table order */
  number: number;
  /** bytes from the start of the disk */
  start: number;
  size: number;
  type: string;
  filesystem?: string;
  label?: string;
}

export interface TargetInfo {
  /** as given */
  path: string;
  /** symlinks resolved (/dev/disk/by-id/… → /dev/sdb) */
  realPath: string;
  kind: 'file' | 'block';
  size: number;
  /** the kernel's name and major:minor of a block device (loop3, 7:3) */
  device?: string;
  devno?: string;
  /** the kernel's name of the whole disk a block device is (itself) or is a partition of */
  wholeDisk?: string;
  /** `dos` or `gpt`, when the target holds a partition table */
  partitionTable?: string;
  partitions: TargetPartition[];
  /** a signature on the whole target (a filesystem, swap, LVM PV, md member…) */
  filesystem?: string;
  label?: string;
  /** why the target is in use by this machine; empty when it is not */
  inUse: string[];
}

/** The filesystem calls telling a device from a file, and whether it is busy; faked in unit tests. */
export interface TargetFs {
  realpath(path: string): Promise<string>;
  stat(
    path: string,
  ): Promise<{ isBlockDevice(): boolean; isFile(): boolean; rdev: number; size: number }>;
  /** Whether the kernel refuses an exclusive open of a block device (EBUSY). */
  busy(path: string): Promise<boolean>;
}

const REAL_FS: TargetFs = {
  realpath,
  stat,
  async busy(path) {
    try {
      await (await open(path, constants.O_RDONLY | constants.O_EXCL)).close();
      return false;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EBUSY') return true;
      throw new ImgctlError(
        'CONFLICT',
        `cannot tell whether target disk ${path} is in use: opening it exclusively failed (${code ?? (error as Error).message})`,
        { hint: 'nothing was written', cause: error },
      );
    }
  },
};

export interface InspectDeps {
  runner: ProcessRunner;
  tables?: HostTables;
  fs?: TargetFs;
}

/**
 * What is on `path` now and whether this machine uses it. Throws NOT_FOUND when it does not
 * exist (a mistyped /dev/sdX must not become a new file) and USAGE when it is neither a block
 * device nor a regular file.
 */
export async function inspectTarget(path: string, deps: InspectDeps): Promise<TargetInfo> {
  const tables = deps.tables ?? HOST_TABLES;
  const fs = deps.fs ?? REAL_FS;
  let realPath: string;
  try {
    realPath = await fs.realpath(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new ImgctlError('NOT_FOUND', `target disk ${path} does not exist`, {
        hint: 'give an existing block device, or a file made beforehand (e.g. truncate -s 8G FILE)',
      });
    throw error;
  }
  const st = await fs.stat(realPath);
  let info: TargetInfo;
  if (st.isBlockDevice()) {
    const { stdout } = await run(
      deps.runner,
      'blockdev',
      ['--getsize64', realPath],
      `reading the size of ${realPath}`,
    );
    const devno = devNumber(st.rdev);
    const dir = await sysfsDir(tables, devno);
    // Without sysfs nothing tells whether the device, or a partition of it, is in use.
    if (dir === undefined)
      throw new ImgctlError(
        'CONFLICT',
        `cannot tell whether target disk ${path} is in use: ${join(tables.sysfs, 'dev/block', devno)} does not exist`,
        { hint: 'nothing was written; mount sysfs (mount -t sysfs sysfs /sys) and run again' },
      );
    info = {
      path,
      realPath,
      kind: 'block',
      size: Number(stdout.trim()),
      devno,
      device: basename(dir),
      wholeDisk: basename(
        (await readText(join(dir, 'partition'))) === undefined ? dir : dirname(dir),
      ),
      partitions: [],
      inUse: await blockDeviceUse(dir, tables, fs),
    };
    // The kernel's own answer, for holders the tables above do not show (a ZFS pool, a mount in
    // another namespace, a program that opened it exclusively): mkfs and wipefs ask it the same way.
    if (info.inUse.length === 0 && (await fs.busy(realPath)))
      info.inUse.push(
        'the kernel reports it busy (an exclusive open fails): something holds it or one of its partitions, e.g. a ZFS pool, a mount in another namespace or another program',
      );
  } else if (st.isFile()) {
    info = {
      path,
      realPath,
      kind: 'file',
      size: st.size,
      partitions: [],
      inUse: await fileUse(realPath, tables),
    };
  } else {
    throw new ImgctlError('USAGE', `target disk ${path} is neither a block device nor a file`);
  }
  await readContent(info, deps.runner);
  return info;
}

export interface TargetRequirements {
  /** bytes the target must hold (the image, plus room for the config partition) */
  needBytes: number;
  /** what needs them, for the message: "the image's 64MiB and a 4MiB config partition" */
  needWhat: string;
  /** the system record names this target as its disk */
  namedBySystem: boolean;
  force: boolean;
}

/**
 * Throws when the target must not be written: in use (CONFLICT, even with --force), too small
 * (HOST), or holding a partition table or filesystem that neither the system record nor
 * --force says may go (CONFLICT). Every reason is in the error's details.
 */
export function checkTarget(info: TargetInfo, req: TargetRequirements): void {
  const name = info.path === info.realPath ? info.path : `${info.path} (${info.realPath})`;
  if (info.inUse.length > 0) {
    throw new ImgctlError('CONFLICT', `target disk ${name} is in use by this machine`, {
      details: info.inUse,
      hint: 'nothing was written; unmount it, stop what holds it, or choose another disk (--force does not override this)',
    });
  }
  if (info.size < req.needBytes) {
    throw new ImgctlError(
      'HOST',
      `target disk ${name} is too small: ${formatSize(info.size)}, ${req.needWhat} need ${formatSize(req.needBytes)}`,
      { hint: 'nothing was written; choose a larger disk' },
    );
  }
  const content = describeContent(info);
  if (content.length > 0 && !req.namedBySystem && !req.force) {
    throw new ImgctlError('CONFLICT', `target disk ${name} is not empty: ${content.join('; ')}`, {
      hint: "nothing was written; give --force to overwrite it, or name it as the system's target_disk",
    });
  }
}

/** Throws USAGE when two disks of the image would go to the same target, or one into the other. */
export function checkSeparate(
  [idA, a]: [string, TargetInfo],
  [idB, b]: [string, TargetInfo],
): void {
  if (a.realPath === b.realPath)
    throw new ImgctlError('USAGE', `disks '${idA}' and '${idB}' both go to ${a.realPath}`);
  const [whole, part] = a.device === b.wholeDisk ? [a, b] : [b, a];
  if (whole.device !== undefined && whole.device === part.wholeDisk)
    throw new ImgctlError(
      'USAGE',
      `disks '${idA}' and '${idB}' overlap: ${part.realPath} is a partition of ${whole.realPath}`,
      { hint: 'give each disk of the image a device of its own' },
    );
}

/** What a person would want to know is on the target before it is overwritten. */
export function describeContent(info: TargetInfo): string[] {
  const lines: string[] = [];
  if (info.partitionTable) {
    lines.push(`${info.partitionTable} partition table, ${info.partitions.length} partition(s)`);
    for (const p of info.partitions) {
      const fs = p.filesystem ? ` ${p.filesystem}${p.label ? ` '${p.label}'` : ''}` : '';
      lines.push(`partition ${p.number}: ${formatSize(p.size)} at ${formatSize(p.start)}${fs}`);
    }
  }
  if (info.filesystem)
    lines.push(`${info.filesystem}${info.label ? ` '${info.label}'` : ''} on the whole disk`);
  return lines;
}

/** "7:3" from a stat rdev (glibc's major()/minor() encoding). */
export function devNumber(rdev: number): string {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

async function sysfsDir(tables: HostTables, devno: string): Promise<string | undefined> {
  try {
    return await realpath(join(tables.sysfs, 'dev/block', devno));
  } catch {
    return undefined;
  }
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

interface Mount {
  devno: string;
  mountPoint: string;
  source: string;
}

/** /proc/self/mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS…] - FSTYPE SOURCE …`. */
export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (fields.length < 5 || dash < 0) continue;
    mounts.push({
      devno: fields[2]!,
      mountPoint: unescapeOctal(fields[4]!),
      source: unescapeOctal(fields[dash + 2] ?? ''),
    });
  }
  return mounts;
}

function unescapeOctal(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The swap areas of /proc/swaps (first column, after the header). */
export function parseSwaps(text: string): string[] {
  return text
    .split('\n')
    .slice(1)
    .map((line) => line.split(/\s+/)[0] ?? '')
    .filter((f) => f !== '')
    .map(unescapeOctal);
}

/** A block device and its partitions: their sysfs directories and major:minor numbers. */
async function deviceFamily(
  dir: string,
): Promise<Array<{ name: string; dir: string; devno: string }>> {
  const family = [
    { name: basename(dir), dir, devno: (await readText(join(dir, 'dev')))?.trim() ?? '' },
  ];
  for (const entry of await listDir(dir)) {
    const sub = join(dir, entry);
    if ((await readText(join(sub, 'partition'))) === undefined) continue;
    family.push({ name: entry, dir: sub, devno: (await readText(join(sub, 'dev')))?.trim() ?? '' });
  }
  return family;
}

/** The whole disks a device lives on: itself, or its parent for a partition, through dm/md slaves. */
async function underlyingDisks(dir: string, seen = new Set<string>()): Promise<Set<string>> {
  if (seen.has(dir)) return seen;
  const disk = (await readText(join(dir, 'partition'))) === undefined ? dir : dirname(dir);
  seen.add(disk);
  for (const slave of await listDir(join(disk, 'slaves'))) {
    const next = await realpath(join(disk, 'slaves', slave)).catch(() => undefined);
    if (next) await underlyingDisks(next, seen);
  }
  return seen;
}

async function blockDeviceUse(dir: string, tables: HostTables, fs: TargetFs): Promise<string[]> {
  const reasons: string[] = [];
  const family = await deviceFamily(dir);
  const byDevno = new Map(family.map((m) => [m.devno, m]));
  const mounts = parseMountinfo((await readText(tables.mountinfo)) ?? '');
  // btrfs (and others) report an anonymous 0:N in mountinfo: their source device tells.
  const sourceDevno = async (mount: Mount) => {
    if (!mount.source.startsWith('/dev/')) return undefined;
    const st = await fs.stat(mount.source).catch(() => undefined);
    return st?.isBlockDevice() ? devNumber(st.rdev) : undefined;
  };
  for (const mount of mounts) {
    const member = byDevno.get(mount.devno) ?? byDevno.get((await sourceDevno(mount)) ?? 'none');
    if (member)
      reasons.push(`/dev/${member.name} is mounted at ${mount.mountPoint} (${mount.source})`);
  }
  const root = mounts.filter((m) => m.mountPoint === '/').at(-1);
  if (root) {
    let rootDir = await sysfsDir(tables, root.devno);
    const rootSource = rootDir === undefined ? await sourceDevno(root) : undefined;
    if (rootSource !== undefined) rootDir = await sysfsDir(tables, rootSource);
    if (rootDir === undefined && root.source.startsWith('/dev/'))
      reasons.push(
        `cannot tell which disk carries the running root filesystem (/ is ${root.source})`,
      );
    else if (rootDir && (await underlyingDisks(rootDir)).has(dir))
      reasons.push(`it carries the running root filesystem (/ is ${root.source})`);
  }
  for (const area of parseSwaps((await readText(tables.swaps)) ?? '')) {
    const st = await fs.stat(area).catch(() => undefined);
    if (st?.isBlockDevice() && byDevno.has(devNumber(st.rdev)))
      reasons.push(`/dev/${byDevno.get(devNumber(st.rdev))!.name} is in use as swap`);
  }
  // A btrfs spanning several devices names one of them as its mount source; sysfs lists all.
  const btrfs = join(tables.sysfs, 'fs/btrfs');
  const byDir = new Map(family.map((m) => [m.dir, m]));
  for (const fsid of await listDir(btrfs)) {
    for (const dev of await listDir(join(btrfs, fsid, 'devices'))) {
      const real = await realpath(join(btrfs, fsid, 'devices', dev)).catch(() => undefined);
      const member = real === undefined ? undefined : byDir.get(real);
      if (member)
        reasons.push(`/dev/${member.name} is a device of the mounted btrfs filesystem ${fsid}`);
    }
  }
  for (const member of family) {
    const holders = await listDir(join(member.dir, 'holders'));
    if (holders.length > 0)
      reasons.push(
        `/dev/${member.name} is held by ${holders.map((h) => `/dev/${h}`).join(', ')} (LVM, md RAID or device-mapper)`,
      );
  }
  return reasons;
}

async function fileUse(realPath: string, tables: HostTables): Promise<string[]> {
  const reasons: string[] = [];
  for (const dev of await listDir(join(tables.sysfs, 'block'))) {
    const backing = (await readText(join(tables.sysfs, 'block', dev, 'loop/backing_file')))?.trim();
    if (backing === realPath) reasons.push(`it backs the loop device /dev/${dev}`);
  }
  for (const area of parseSwaps((await readText(tables.swaps)) ?? ''))
    if (area === realPath) reasons.push('it is in use as a swap file');
  return reasons;
}

/** The partition table (sfdisk --json) and the signatures (blkid -p) of the target. */
async function readContent(info: TargetInfo, runner: ProcessRunner): Promise<void> {
  const table = await readPartitionTable(info.realPath, runner);
  if (table) {
    info.partitionTable = table.label;
    info.partitions = table.partitions;
    for (const p of info.partitions) {
      const probe = await probeSignature(runner, info.realPath, p.start, p.size);
      p.filesystem = probe.TYPE;
      p.label = probe.LABEL;
    }
  } else {
    const probe = await probeSignature(runner, info.realPath);
    info.filesystem = probe.TYPE;
    info.label = probe.LABEL;
  }
}

export interface PartitionTable {
  label: string;
  /** the table's own bounds for partitions (GPT), bytes */
  firstUsable?: number;
  lastUsable?: number;
  sectorSize: number;
  partitions: TargetPartition[];
}

/** `sfdisk --json`, in bytes; undefined when the target holds no partition table. */
export async function readPartitionTable(
  path: string,
  runner: ProcessRunner,
): Promise<PartitionTable | undefined> {
  let stdout: string;
  try {
    ({ stdout } = await runner.run('sfdisk', ['--json', path]));
  } catch {
    return undefined;
  }
  if (stdout.trim() === '') return undefined;
  const table = (
    JSON.parse(stdout) as {
      partitiontable: {
        label: string;
        sectorsize?: number;
        firstlba?: number;
        lastlba?: number;
        partitions?: Array<{ start: number; size: number; type: string }>;
      };
    }
  ).partitiontable;
  const sector = table.sectorsize ?? 512;
  return {
    label: table.label,
    sectorSize: sector,
    firstUsable: table.firstlba === undefined ? undefined : table.firstlba * sector,
    lastUsable: table.lastlba === undefined ? undefined : (table.lastlba + 1) * sector,
    partitions: (table.partitions ?? []).map((p, i) => ({
      number: i + 1,
      start: p.start * sector,
      size: p.size * sector,
      type: p.type,
    })),
  };
}

/** blkid's TYPE and LABEL at a region of the target (the whole of it by default). */
async function probeSignature(
  runner: ProcessRunner,
  path: string,
  offset?: number,
  size?: number,
): Promise<{ TYPE?: string; LABEL?: string }> {
  const region = offset === undefined ? [] : ['--offset', String(offset), '--size', String(size)];
  try {
    const { stdout } = await runner.run('blkid', ['-p', '-o', 'export', ...region, path]);
    const values: Record<string, string> = {};
    for (const line of stdout.split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) values[line.slice(0, eq)] = line.slice(eq + 1);
    }
    // A partition table alone (PTTYPE) is reported by sfdisk, not as a filesystem.
    return { TYPE: values.TYPE, LABEL: values.LABEL };
  } catch {
    return {}; // exit 2: nothing recognised
  }
}

/** The sink a raw image is streamed into (client.streamBlob's BlobSink), and how it went. */
export interface TargetWriter {
  write(data: Buffer, offset: number): Promise<void>;
  /**
   * Writes what was held back (the first MiB), fsyncs, drops the target's cached pages and reads
   * the region back from the disk; resolves with the sha256 of what the target now holds there.
   */
  finish(): Promise<string>;
  /** closes without writing what was held back: the target stays unbootable */
  abort(): Promise<void>;
  readonly stats: { written: number; skipped: number; readFromDisk?: boolean };
  /** whether all-zero blocks are skipped (the target reads back zeros there) */
  readonly skipsZeros: boolean;
}

/** The first MiB (partition table, boot code) is written last, so a cut-off write never boots. */
export const HEAD_BYTES = 1024 * 1024;

/**
 * Opens the target for writing, a block device exclusively (O_EXCL): while the handle is open
 * nothing can mount or claim it. CONFLICT when something did since it was checked.
 */
export async function openForWriting(info: TargetInfo): Promise<FileHandle> {
  try {
    return await open(
      info.realPath,
      constants.O_RDWR | (info.kind === 'block' ? constants.O_EXCL : 0),
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EBUSY') throw error;
    throw new ImgctlError(
      'CONFLICT',
      `target disk ${info.path} became busy after it was checked: something mounted or claimed it`,
      {
        hint: 'nothing was written; find what uses it (lsblk, findmnt, zpool status) and run again',
      },
    );
  }
}

/**
 * Opens the target to receive `length` bytes of a raw image at offset 0.
 *
 * - A file: the region is punched into a hole first (`fallocate --punch-hole`), so all-zero
 *   blocks need not be written; where punching is not supported every byte is written.
 * - A block device: every byte is written. Whether a discarded region reads back as zeros is
 *   not something the kernel promises any more (discard_zeroes_data is always 0), so nothing
 *   is skipped. The head is zeroed first instead, so a cut-off write leaves no partition table.
 *
 * The first HEAD_BYTES are held in memory and written by finish(): until then the target has
 * no partition table and no boot code. `handle` (from openForWriting) is the writer's to close.
 */
export async function openTargetWriter(
  info: TargetInfo,
  handle: FileHandle,
  length: number,
  runner: ProcessRunner,
): Promise<TargetWriter> {
  let skipsZeros = false;
  if (info.kind === 'file') {
    try {
      await runner.run('fallocate', [
        '--punch-hole',
        '--offset',
        '0',
        '--length',
        String(length),
        info.realPath,
      ]);
      skipsZeros = true;
    } catch {
      // no hole punching on this filesystem: zeros are written like everything else
    }
  }
  const head = Buffer.alloc(Math.min(HEAD_BYTES, length));
  const stats: TargetWriter['stats'] = { written: 0, skipped: 0 };
  try {
    if (!skipsZeros) {
      await writeFully(handle, head, 0, head.length, 0);
      await handle.sync();
    }
  } catch (error) {
    await handle.close();
    throw error;
  }
  let closed = false;
  const writeRegion = async (data: Buffer, offset: number) => {
    const skipped = skipsZeros ? await writeNonZero(handle, data, data.length, offset) : 0;
    if (!skipsZeros) await writeFully(handle, data, 0, data.length, offset);
    stats.written += data.length - skipped;
    stats.skipped += skipped;
  };
  return {
    skipsZeros,
    stats,
    async write(data, offset) {
      if (offset + data.length > length)
        throw new ImgctlError('INTEGRITY', `the image is longer than its size ${length}`);
      if (offset < head.length) {
        const n = Math.min(head.length - offset, data.length);
        data.copy(head, offset, 0, n);
        data = data.subarray(n);
        offset += n;
        if (data.length === 0) return;
      }
      await writeRegion(data, offset);
    },
    async finish() {
      await writeRegion(head, 0);
      await handle.sync();
      closed = true;
      await handle.close();
      stats.readFromDisk = await dropCachedPages(info.realPath, runner);
      return hashRegion(info.realPath, length);
    },
    async abort() {
      if (closed) return;
      closed = true;
      await handle.sync().catch(() => undefined);
      await handle.close();
    },
  };
}

/**
 * Drops a (synced) file's or device's pages from the page cache, so what is read next comes
 * from the disk, not from what the writes left: GNU dd's iflag=nocache with count=0
 * (posix_fadvise DONTNEED on the whole file). False where dd cannot (busybox's): the read-back
 * then comes from the cache.
 */
export async function dropCachedPages(path: string, runner: ProcessRunner): Promise<boolean> {
  try {
    await runner.run('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
    return true;
  } catch {
    return false;
  }
}

/** Zeroes the first MiB (partition table, boot code) of a target and syncs it: it no longer boots. */
export async function eraseHead(path: string, size: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await writeFully(
      handle,
      Buffer.alloc(Math.min(HEAD_BYTES, size)),
      0,
      Math.min(HEAD_BYTES, size),
      0,
    );
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** sha256 of the first `length` bytes of the target, read back after the write. */
export async function hashRegion(path: string, length: number): Promise<string> {
  const hash = createHash('sha256');
  const handle = await open(path, 'r');
  const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
  try {
    for (let pos = 0; pos < length;) {
      const { bytesRead } = await handle.read(
        buffer,
        0,
        Math.min(buffer.length, length - pos),
        pos,
      );
      if (bytesRead === 0)
        throw new ImgctlError('FAILED', `${path} ended at ${pos} of ${length} bytes`);
      hash.update(buffer.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}
