/**
 * The config partition `imgagent --replace-self` adds to a written disk: a small vfat filesystem
 * labelled `cidata` holding the NoCloud seed (meta-data, user-data, network-config), in a new
 * partition after the image's last one, in the image's own table (MBR or GPT).
 *
 * Everything works at byte offsets of the target (sfdisk on the whole target, mkfs.vfat
 * --offset, mtools' FILE@@OFFSET), so a regular file and a block device whose partitions the
 * kernel never scanned (a loop device without partscan) are handled the same way.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ProcessRunner } from '../util/process.ts';
import { run } from './steps.ts';
import { ImgctlError } from '../util/errors.ts';
import type { SeedFiles } from './seed.ts';
import { formatSize } from '../util/sizes.ts';
import { readPartitionTable } from './target-disk.ts';

const CONFIG_LABEL = 'cidata';
export const CONFIG_PARTITION_BYTES = 4 * 1024 * 1024;
const ALIGN = 1024 * 1024;
/** GPT's backup table at the end of the disk */
const GPT_TAIL = 1024 * 1024;
/** Microsoft basic data: what a vfat partition is on GPT */
const GPT_BASIC_DATA = 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7';

/** The bytes a target needs beyond the image for the config partition, at most. */
export const CONFIG_PARTITION_ROOM = ALIGN + CONFIG_PARTITION_BYTES + GPT_TAIL;

export interface ConfigPartition {
  table: string;
  number: number;
  /** bytes from the start of the target */
  start: number;
  size: number;
}

export interface ConfigPartitionOptions {
  runner: ProcessRunner;
  /** the target's size in bytes (a GPT's backup table is moved to its end) */
  diskSize: number;
  /** a directory for the seed files while they are copied */
  tmpDir: string;
  /** PATH for the tools (mtools reads its settings from the environment) */
  path: string;
}

/**
 * Appends the config partition to the partition table on `target` and puts `files` on a new
 * vfat filesystem in it. Throws VALIDATION when the image has no partition table, FAILED when
 * the table has no room (four primary MBR partitions, or no space after the last one).
 */
export async function addConfigPartition(
  target: string,
  files: SeedFiles,
  options: ConfigPartitionOptions,
): Promise<ConfigPartition> {
  const { runner } = options;
  const sh = (file: string, args: string[], what: string, input?: string) =>
    run(runner, file, args, what, {
      input,
      env: { PATH: options.path, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' },
    });
  let table = await readPartitionTable(target, runner);
  if (!table) {
    throw new ImgctlError(
      'VALIDATION',
      `the image written on ${target} has no partition table: there is nowhere to add the config partition`,
      { hint: 'the system disk of an image for --replace-self must carry an MBR or GPT table' },
    );
  }
  if (table.label === 'gpt') {
    // The image's backup GPT sits at the image's end; move it to the end of the target.
    await sh('sfdisk', ['--relocate', 'gpt-bak-std', target], 'moving the backup GPT');
    table = (await readPartitionTable(target, runner))!;
  } else if (table.label === 'dos' && table.partitions.length >= 4) {
    throw new ImgctlError(
      'FAILED',
      `the image's MBR already has ${table.partitions.length} partitions: no room for the config partition`,
    );
  } else if (table.label !== 'dos') {
    throw new ImgctlError(
      'VALIDATION',
      `unsupported partition table '${table.label}' on ${target}`,
    );
  }
  const sector = table.sectorSize;
  const lastEnd = Math.max(ALIGN, ...table.partitions.map((p) => p.start + p.size));
  const start = Math.ceil(lastEnd / ALIGN) * ALIGN;
  const size = CONFIG_PARTITION_BYTES;
  const limit = table.lastUsable ?? options.diskSize;
  if (start + size > limit) {
    throw new ImgctlError(
      'FAILED',
      `no room for the ${formatSize(size)} config partition after the image's partitions (they end at ${formatSize(lastEnd)}, the disk at ${formatSize(limit)})`,
      { hint: 'use a larger target disk' },
    );
  }
  // FAT12 (MBR type 01): mkfs.vfat would otherwise pick the FAT type from the whole disk's size.
  const type = table.label === 'gpt' ? `${GPT_BASIC_DATA}, name=${CONFIG_LABEL}` : '1';
  await sh(
    'sfdisk',
    ['--append', '--no-reread', '--no-tell-kernel', '--quiet', target],
    'adding the config partition',
    `start=${start / sector}, size=${size / sector}, type=${type}\n`,
  );
  const number = table.partitions.length + 1;
  await sh(
    'mkfs.vfat',
    [
      '-I',
      '-F',
      '12',
      '--offset',
      String(start / sector),
      '-h',
      String(start / sector),
      '-n',
      CONFIG_LABEL,
      target,
      String(size / 1024),
    ],
    'making the config filesystem',
  );
  const staging = await mkdtemp(join(options.tmpDir, 'imgagent-seed-'));
  try {
    const names = Object.keys(files) as Array<keyof SeedFiles>;
    for (const name of names) await writeFile(join(staging, name), files[name], { mode: 0o600 });
    await sh(
      'mcopy',
      ['-i', `${target}@@${start}`, ...names.map((n) => join(staging, n)), '::/'],
      'copying the seed onto the config partition',
    );
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return { table: table.label, number, start, size };
}
