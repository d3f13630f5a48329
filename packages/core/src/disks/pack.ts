import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { Header, Pax } from 'tar';
import { syncDirectory } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { loadImage } from '../store/images.ts';
import { printable } from '../util/names.ts';
import { startFilter } from '../util/process.ts';
import { exists, SHA256_HEX, storePaths } from '../store/store.ts';

/**
 * The archive format of `imgctl pack` / `imgctl import` (docs/pack-import.md):
 * a tar whose first member is `manifest.json`, then the image directory under `image/`, then
 * the disk contents under `blobs/sha256/<hex>`. Every member is listed in the manifest with its
 * size and sha256, so an importer knows what to expect before it writes a byte.
 */
export const PACK_FORMAT = 'imgctl-pack/1';
export const MANIFEST_NAME = 'manifest.json';

export interface ManifestFile {
  /** path inside the image directory, forward slashes */
  path: string;
  size: number;
  sha256: string;
  /** 0o644 or 0o755 */
  mode: number;
}

export interface ManifestBlob {
  sha256: string;
  size: number;
}

export interface Manifest {
  format: typeof PACK_FORMAT;
  image: string;
  revision: number;
  /** directories of the image directory (so empty ones survive), sorted */
  dirs: string[];
  files: ManifestFile[];
  blobs: ManifestBlob[];
}

/** Limits an archive must respect; the importer refuses anything beyond them. */
export const PACK_LIMITS = {
  manifestBytes: 4 * 1024 * 1024,
  entries: 20_000,
  pathBytes: 1024,
  segmentBytes: 255,
};

/** A relative path inside an image: plain segments, no '.', '..', empty or hidden control chars. */
export function isSafeRelPath(path: string): boolean {
  if (path.length === 0 || Buffer.byteLength(path) > PACK_LIMITS.pathBytes) return false;
  if (path.startsWith('/') || path.includes('\\') || path.includes('\0')) return false;
  return path
    .split('/')
    .every(
      (s) =>
        s !== '' &&
        s !== '.' &&
        s !== '..' &&
        Buffer.byteLength(s) <= PACK_LIMITS.segmentBytes &&
        ![...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f),
    );
}

export type PackCompression = 'none' | 'gzip' | 'zstd';

/** The compression a file name asks for, or a USAGE error naming the supported suffixes. */
export function compressionFor(file: string): PackCompression {
  const name = basename(file);
  if (name.endsWith('.tar')) return 'none';
  if (name.endsWith('.tar.gz') || name.endsWith('.tgz')) return 'gzip';
  if (name.endsWith('.tar.zst') || name.endsWith('.tzst')) return 'zstd';
  throw new ImgctlError('USAGE', `cannot tell the archive format of '${printable(name)}'`, {
    hint: 'name the output FILE.tar, FILE.tar.gz (or .tgz) or FILE.tar.zst (needs the zstd program)',
  });
}

export interface PackProgress {
  /** bytes of file and blob content written so far */
  done: number;
  total: number;
}

export interface PackOptions {
  onProgress?: (progress: PackProgress) => void;
  /** zstd program, for .tar.zst (default 'zstd' on PATH) */
  zstdCommand?: string;
  /** gzip program, for .tar.gz (default 'gzip' on PATH) */
  gzipCommand?: string;
}

export interface PackResult {
  image: string;
  revision: number;
  output: string;
  compression: PackCompression;
  files: number;
  blobs: number;
  /** bytes of content packed (before compression) */
  bytes: number;
}

interface Member {
  name: string;
  type: 'File' | 'Directory';
  mode: number;
  size: number;
  sha256?: string;
  source?: string;
}

/**
 * Packs image `name` with its blobs into one archive at `output`. The archive is written to a
 * temporary name next to `output` and renamed when complete; it is deterministic (sorted
 * members, fixed owner and times), so the same image packs to the same bytes. Content streams
 * from disk and is hashed on the way: a blob whose content no longer matches its name fails
 * the pack (INTEGRITY) instead of producing an archive no importer would accept.
 */
export async function packImage(
  storeDir: string,
  name: string,
  output: string,
  options: PackOptions = {},
): Promise<PackResult> {
  const compression = compressionFor(output);
  const image = await loadImage(storeDir, name);
  const imageDir = storePaths.imageDir(storeDir, name);
  const { dirs, files } = await listImageTree(imageDir);

  const manifestFiles: ManifestFile[] = [];
  for (const rel of files) {
    const path = join(imageDir, rel);
    const st = await lstat(path);
    manifestFiles.push({
      path: rel,
      size: st.size,
      sha256: await sha256File(path),
      mode: st.mode & 0o111 ? 0o755 : 0o644,
    });
  }
  const blobs = new Map<string, ManifestBlob>();
  for (const disk of image.disks) {
    if (disk.blob !== true || disk.sha256 === undefined || blobs.has(disk.sha256)) continue;
    const path = storePaths.blobFile(storeDir, disk.sha256);
    let size: number;
    try {
      size = (await lstat(path)).size;
    } catch {
      throw new ImgctlError(
        'NOT_FOUND',
        `disk '${disk.id}' of image '${name}' has no content in the store (${disk.sha256})`,
        { hint: `add it with 'imgctl disk add ${name} --id ${disk.id} …' before packing` },
      );
    }
    blobs.set(disk.sha256, { sha256: disk.sha256, size });
  }
  const manifest: Manifest = {
    format: PACK_FORMAT,
    image: name,
    revision: image.revision,
    dirs,
    files: manifestFiles,
    blobs: [...blobs.values()].sort((a, b) => a.sha256.localeCompare(b.sha256)),
  };
  const manifestBytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);

  const members: Member[] = [
    ...dirs.map((d) => ({ name: `image/${d}/`, type: 'Directory' as const, mode: 0o755, size: 0 })),
    ...manifestFiles.map((f) => ({
      name: `image/${f.path}`,
      type: 'File' as const,
      mode: f.mode,
      size: f.size,
      sha256: f.sha256,
      source: join(imageDir, f.path),
    })),
  ].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const blob of manifest.blobs) {
    members.push({
      name: `blobs/sha256/${blob.sha256}`,
      type: 'File',
      mode: 0o644,
      size: blob.size,
      sha256: blob.sha256,
      source: storePaths.blobFile(storeDir, blob.sha256),
    });
  }

  const total = members.reduce((sum, m) => sum + m.size, 0);
  const progress = { done: 0, total };
  const target = resolve(output);
  const tmp = join(
    dirname(target),
    `.${basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  const sink = await openSink(tmp, compression, options);
  try {
    await writeTar(sink, manifestBytes, members, (n) => {
      progress.done += n;
      options.onProgress?.({ ...progress });
    });
    await sink.close();
    await rename(tmp, target);
    await syncDirectory(dirname(target));
  } catch (error) {
    await sink.abort();
    await rm(tmp, { force: true });
    throw error;
  }
  return {
    image: name,
    revision: image.revision,
    output: target,
    compression,
    files: manifestFiles.length,
    blobs: manifest.blobs.length,
    bytes: total,
  };
}

/** Directories and regular files under `dir`, relative and sorted; anything else is refused. */
export async function listImageTree(dir: string): Promise<{ dirs: string[]; files: string[] }> {
  const dirs: string[] = [];
  const files: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const rel = join(entry.parentPath, entry.name).slice(dir.length + 1);
    if (entry.isDirectory()) dirs.push(rel);
    else if (entry.isFile()) files.push(rel);
    else
      throw new ImgctlError(
        'VALIDATION',
        `the image directory holds '${printable(rel)}', which is not a regular file or directory`,
        { hint: 'an image holds regular files only; replace links with the files they point to' },
      );
    if (!isSafeRelPath(rel))
      throw new ImgctlError('VALIDATION', `cannot pack the file name '${printable(rel)}'`);
  }
  return { dirs: dirs.sort(), files: files.sort() };
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

const EPOCH = new Date(0);
/** read size for streamed content */
const CHUNK = 1024 * 1024;
const ZERO_BLOCKS = Buffer.alloc(1024);

/** One tar header (with a pax header first when the name needs it), fixed owner and time. */
export function tarHeader(
  name: string,
  type: 'File' | 'Directory',
  size: number,
  mode: number,
  owner = { uid: 0, gid: 0 },
): Buffer {
  const fields = {
    path: name,
    type,
    size,
    mode,
    ...owner,
    uname: '',
    gname: '',
    mtime: EPOCH,
  };
  const block = Buffer.alloc(512);
  const header = new Header(fields);
  header.encode(block);
  if (!header.needPax) return block;
  return Buffer.concat([new Pax({ path: name, mtime: EPOCH }).encode(), block]);
}

/**
 * Where the tar bytes go. `write` resolves once the buffer has been consumed, so the caller may
 * refill it: content streams through one reused buffer and memory stays flat (discarded
 * per-chunk buffers otherwise pile up to tens of MB between two garbage collections).
 */
interface Sink {
  write(data: Buffer): Promise<void>;
  close(): Promise<void>;
  abort(): Promise<void>;
}

/** The program that compresses (and decompresses) a compression, with its arguments. */
export function compressor(
  compression: Exclude<PackCompression, 'none'>,
  programs: { gzipCommand?: string; zstdCommand?: string } = {},
): { program: string; packArgs: string[]; unpackArgs: string[]; install: string } {
  return compression === 'gzip'
    ? {
        program: programs.gzipCommand ?? 'gzip',
        // -n: no name or time in the header, so the same image packs to the same bytes
        packArgs: ['-c', '-6', '-n'],
        unpackArgs: ['-d', '-c'],
        install: 'gzip',
      }
    : {
        program: programs.zstdCommand ?? 'zstd',
        packArgs: ['-q', '-c', '-3', '-'],
        unpackArgs: ['-q', '-d', '-c', '-'],
        install: 'zstd',
      };
}

async function openSink(
  path: string,
  compression: PackCompression,
  programs: { gzipCommand?: string; zstdCommand?: string },
): Promise<Sink> {
  if (compression === 'none') {
    const handle = await open(path, 'wx', 0o644);
    return {
      write: async (data) => {
        await handle.write(data, 0, data.length);
      },
      close: async () => {
        await handle.sync();
        await handle.close();
      },
      abort: () => handle.close().catch(() => undefined),
    };
  }
  const { program, packArgs, install } = compressor(compression, programs);
  if (!(await hasProgram(program))) {
    throw new ImgctlError(
      'USAGE',
      `.${compression === 'gzip' ? 'tar.gz' : 'tar.zst'} needs the '${program}' program, which is not installed`,
      { hint: `install it (Debian: apt-get install ${install}), or name the output FILE.tar` },
    );
  }
  // The compressor runs as its own process writing straight into the file: its memory is not
  // ours, the compressed bytes never pass through here, and it works on the other core while
  // this one reads and hashes.
  const handle = await open(path, 'wx', 0o644);
  const child = startFilter(program, packArgs, {
    stdin: 'pipe',
    stdout: createWriteStream(path, { fd: handle.fd, autoClose: false }),
  });
  const input: Writable = child.stdin!;
  const kill = () => child.kill();
  const done: Promise<unknown> = child.done.then(() => handle.sync()).finally(() => handle.close());
  done.catch(() => undefined);
  return {
    write: (data) =>
      new Promise<void>((resolveWrite, reject) => {
        input.write(data, (error) => (error ? reject(error) : resolveWrite()));
      }),
    close: async () => {
      input.end();
      await done;
    },
    abort: async () => {
      input.destroy();
      kill();
      await done.catch(() => undefined);
    },
  };
}

async function writeTar(
  sink: Sink,
  manifest: Buffer,
  members: Member[],
  onBytes: (n: number) => void,
): Promise<void> {
  await sink.write(tarHeader(MANIFEST_NAME, 'File', manifest.length, 0o644));
  await sink.write(padded(manifest));
  const buffer = Buffer.allocUnsafe(CHUNK);
  for (const member of members) {
    await sink.write(tarHeader(member.name, member.type, member.size, member.mode));
    if (member.type !== 'File') continue;
    const hash = createHash('sha256');
    let seen = 0;
    const handle = await open(member.source!, 'r');
    try {
      while (seen < member.size) {
        const want = Math.min(buffer.length, member.size - seen);
        const { bytesRead } = await handle.read(buffer, 0, want, seen);
        if (bytesRead === 0) break;
        const data = buffer.subarray(0, bytesRead);
        hash.update(data);
        await sink.write(data);
        seen += bytesRead;
        onBytes(bytesRead);
      }
    } finally {
      await handle.close();
    }
    const digest = hash.digest('hex');
    if (seen !== member.size || digest !== member.sha256) {
      throw new ImgctlError(
        'INTEGRITY',
        `${member.name} changed or is damaged: expected ${member.size} bytes with sha256 ${member.sha256}, read ${seen} bytes with sha256 ${digest}`,
        {
          hint: member.name.startsWith('blobs/')
            ? "the store's copy of this disk is damaged; 'imgctl verify' finds every such blob"
            : 'do not edit the image while it is being packed; run the pack again',
        },
      );
    }
    const pad = (512 - (member.size % 512)) % 512;
    if (pad > 0) await sink.write(Buffer.alloc(pad));
  }
  await sink.write(ZERO_BLOCKS);
}

function padded(data: Buffer): Buffer {
  const pad = (512 - (data.length % 512)) % 512;
  return pad === 0 ? data : Buffer.concat([data, Buffer.alloc(pad)]);
}

async function hasProgram(command: string): Promise<boolean> {
  if (command.includes('/')) return exists(command);
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir !== '' && (await exists(join(dir, command)))) return true;
  }
  return false;
}

/** True when `hex` is a well-formed sha256. */
export function isSha256(hex: unknown): hex is string {
  return typeof hex === 'string' && SHA256_HEX.test(hex);
}
