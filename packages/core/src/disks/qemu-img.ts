import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { processRunner } from '../util/process.ts';

/** What `qemu-img info` says about a disk image, read from its content (never its name). */
export interface QemuImgInfo {
  format: string;
  /** bytes the guest sees */
  virtualSize: number;
  /** bytes the file occupies on the host, when qemu-img knows */
  actualSize?: number;
  backingFile?: string;
  /** qcow2: an external data file, which (like a backing file) can point anywhere on the host */
  dataFile?: string;
  /** the image was not closed cleanly (qcow2 lazy refcounts) */
  dirty: boolean;
  /** qcow2 marked corrupt */
  corrupt: boolean;
  /** vmdk: monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtentSparse, … */
  vmdkCreateType?: string;
}

/** One run of bytes of a file as `qemu-img map` reports it. */
export interface Extent {
  start: number;
  length: number;
  /** false: a hole (reads as zeros, occupies nothing) */
  data: boolean;
}

const TIMEOUT_MS = 60_000;
const runner = processRunner();

/**
 * `qemu-img info --output=json` of `file`. The path is made absolute so a name like `json:{…}`
 * or `nbd:…` is never read as a qemu protocol; backing files are not opened.
 */
export async function qemuImgInfo(
  file: string,
  options: { signal?: AbortSignal } = {},
): Promise<QemuImgInfo> {
  // Said plainly here; qemu-img's own words for it are "Could not open …: Could not open …".
  await access(resolve(file), constants.R_OK).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR')
      throw new ImgctlError('NOT_FOUND', `${printable(file)} does not exist`, {
        hint: 'check the path of the disk image',
      });
  });
  const stdout = await runQemuImg(['info', '--output=json', '--', resolve(file)], file, options);
  return parseQemuImgInfo(stdout, file);
}

/** The data extents and holes of `file` read as plain bytes (`qemu-img map -f raw`). */
export async function qemuImgMap(
  file: string,
  options: { signal?: AbortSignal } = {},
): Promise<Extent[]> {
  const stdout = await runQemuImg(
    ['map', '-f', 'raw', '--output=json', '--', resolve(file)],
    file,
    options,
  );
  return parseQemuImgMap(stdout);
}

export function parseQemuImgInfo(json: string, file = 'the file'): QemuImgInfo {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(json) as Record<string, unknown>;
  } catch (cause) {
    throw new ImgctlError('FAILED', `qemu-img info printed something unexpected for ${file}`, {
      cause,
    });
  }
  const specific = (raw['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data;
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const format = str(raw.format);
  const virtualSize = raw['virtual-size'];
  if (format === undefined || typeof virtualSize !== 'number') {
    throw new ImgctlError('FAILED', `qemu-img info gave no format or size for ${file}`);
  }
  return {
    format,
    virtualSize,
    actualSize: typeof raw['actual-size'] === 'number' ? raw['actual-size'] : undefined,
    backingFile: str(raw['backing-filename']) ?? str(raw['full-backing-filename']),
    dataFile: str(specific?.['data-file']),
    dirty: raw['dirty-flag'] === true,
    corrupt: specific?.corrupt === true,
    vmdkCreateType: format === 'vmdk' ? str(specific?.['create-type']) : undefined,
  };
}

function parseQemuImgMap(json: string): Extent[] {
  const rows = JSON.parse(json) as Array<{ start: number; length: number; data: boolean }>;
  return rows.map((r) => ({ start: r.start, length: r.length, data: r.data }));
}

async function runQemuImg(
  args: string[],
  file: string,
  options: { signal?: AbortSignal },
): Promise<string> {
  try {
    const result = await runner.run('qemu-img', args, {
      timeout: TIMEOUT_MS,
      signal: options.signal,
      env: { LC_ALL: 'C' },
      extendEnv: true,
    });
    return result.stdout;
  } catch (error) {
    const e = error as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') {
      throw new ImgctlError('HOST', 'qemu-img is not installed', {
        hint: 'install it (Debian: apt-get install qemu-utils)',
      });
    }
    options.signal?.throwIfAborted();
    const message = String(e.stderr || e.shortMessage || 'failed')
      .split('\n')[0]!
      .replace(/^qemu-img: /, '');
    throw new ImgctlError('VALIDATION', `qemu-img cannot read ${printable(file)}: ${message}`, {
      hint: 'give a disk image qemu-img understands (raw, qcow2, vmdk, vdi, vhdx)',
    });
  }
}
