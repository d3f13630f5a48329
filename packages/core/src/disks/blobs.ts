import { createHash, randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import {
  chmod,
  copyFile,
  type FileHandle,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  stat,
} from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { syncDirectory } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { isAlive } from '../util/pid.ts';
import { type Extent, qemuImgMap } from './qemu-img.ts';
import { SHA256_HEX, storePaths } from '../store/store.ts';

/** A blob of the store: content-addressed disk content under .blobs/sha256/ab/<hex>. */
export interface BlobInfo {
  sha256: string;
  /** bytes of content (a sparse blob occupies less on disk) */
  size: number;
  /** true: the store already held this content (the blob is rewritten from the new copy all the same) */
  reused: boolean;
}

export interface ProgressOptions {
  /** called after every chunk; `total` is NaN when the size is not known in advance */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface StreamOptions extends ProgressOptions {
  /** the content must hash to this, else INTEGRITY and nothing is kept */
  expectedSha256?: string;
  /** more content than this is refused (VALIDATION) and nothing is kept */
  maxBytes?: number;
  /** the size announced by the source: for progress, and INTEGRITY when it differs */
  expectedSize?: number;
}

/**
 * Content hashed and written to a temporary file of the store (`.blobs/tmp/`), not yet a blob:
 * `commit` moves it into place, `discard` removes it. Lets a caller inspect the exact bytes
 * (e.g. with qemu-img) before they enter the store.
 */
export interface StagedBlob {
  path: string;
  sha256: string;
  size: number;
  commit(): Promise<BlobInfo>;
  discard(): Promise<void>;
}

const CHUNK = 4 * 1024 * 1024;
/** the granularity at which all-zero content is skipped (left as a hole) when writing */
const BLOCK = 64 * 1024;
const SLOTS = 8;
/** chunks read ahead of the one being hashed; the other slots hold writes in flight */
const READ_AHEAD = 4;
/** bytes written between two early writebacks (see pump) */
const SYNC_EVERY = 64 * 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

export function blobPath(storeDir: string, sha256: string): string {
  return storePaths.blobFile(storeDir, sha256);
}

/** Where blobs are written before they are complete; stale files are removed by `verify --gc`. */
export function blobTmpDir(storeDir: string): string {
  return join(storeDir, '.blobs', 'tmp');
}

/**
 * Copies `file` into the store as a blob, hashing it in the same pass: one read of the source.
 * A reflink (copy-on-write clone) is used when the filesystem offers one, and then the clone is
 * hashed. Sparse files stay sparse: holes are found with `qemu-img map` and never read (their
 * zeros are still hashed), and all-zero blocks of the data are not written. Killed at any point,
 * the store holds either the complete blob or a temporary file under `.blobs/tmp/`.
 */
export async function addBlobFromFile(
  storeDir: string,
  file: string,
  options: ProgressOptions = {},
): Promise<BlobInfo> {
  return commitOrDiscard(await stageBlobFromFile(storeDir, file, options));
}

/** As addBlobFromFile, for content arriving as a stream (imports, downloads). */
export async function addBlobFromStream(
  storeDir: string,
  stream: NodeJS.ReadableStream | AsyncIterable<Uint8Array>,
  options: StreamOptions = {},
): Promise<BlobInfo> {
  return commitOrDiscard(await stageBlobFromStream(storeDir, stream, options));
}

async function commitOrDiscard(staged: StagedBlob): Promise<BlobInfo> {
  try {
    return await staged.commit();
  } catch (error) {
    await staged.discard();
    throw error;
  }
}

export async function stageBlobFromFile(
  storeDir: string,
  file: string,
  options: ProgressOptions = {},
): Promise<StagedBlob> {
  const source = resolve(file);
  const tmp = await newTmpFile(storeDir);
  try {
    const st = await statSource(source, file);
    let result: { sha256: string; size: number };
    if (st.isFile() && (await tryReflink(source, tmp))) {
      // The clone is ours alone, so hashing it (not the source) names exactly what is kept.
      const out = await open(tmp, 'r');
      try {
        result = await pump(out, await extentsOf(tmp, st, options), undefined, options);
        await out.sync();
      } finally {
        await out.close();
      }
    } else if (st.isFile() && st.blocks * 512 >= st.size) {
      result = await copyDenseFile(source, tmp, st, options);
    } else {
      const [src, out] = await Promise.all([open(source, 'r'), open(tmp, 'wx', 0o644)]);
      try {
        result = await pump(src, await extentsOf(source, st, options), out, options);
        await out.truncate(result.size);
        await out.sync();
      } finally {
        await Promise.all([src.close(), out.close()]);
      }
    }
    return staged(storeDir, tmp, result);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}

export async function stageBlobFromStream(
  storeDir: string,
  stream: NodeJS.ReadableStream | AsyncIterable<Uint8Array>,
  options: StreamOptions = {},
): Promise<StagedBlob> {
  const tmp = await newTmpFile(storeDir);
  try {
    const out = await open(tmp, 'wx', 0o644);
    const hash = createHash('sha256');
    const total = options.expectedSize ?? Number.NaN;
    const slots = makeSlots();
    let slot = 0;
    let fill = 0;
    let size = 0;
    const flush = async () => {
      const s = slots[slot]!;
      s.busy = settle(writeNonZero(out, s.buf, fill, size - fill));
      slot = (slot + 1) % SLOTS;
      fill = 0;
      await slots[slot]!.busy;
    };
    try {
      for await (const piece of stream as AsyncIterable<Uint8Array | string>) {
        options.signal?.throwIfAborted();
        const bytes = typeof piece === 'string' ? Buffer.from(piece) : piece;
        if (options.maxBytes !== undefined && size + bytes.length > options.maxBytes) {
          throw new ImgctlError(
            'VALIDATION',
            `the content is larger than the ${options.maxBytes} bytes it may have`,
          );
        }
        hash.update(bytes);
        let offset = 0;
        while (offset < bytes.length) {
          const n = Math.min(bytes.length - offset, CHUNK - fill);
          slots[slot]!.buf.set(bytes.subarray(offset, offset + n), fill);
          fill += n;
          size += n;
          offset += n;
          if (fill === CHUNK) await flush();
        }
        options.onProgress?.(size, total);
      }
      if (fill > 0) await flush();
      await Promise.all(slots.map((s) => s.busy));
      await out.truncate(size);
      await out.sync();
    } finally {
      await Promise.all(slots.map((s) => s.busy.catch(() => undefined)));
      await out.close();
    }
    const sha256 = hash.digest('hex');
    if (options.expectedSize !== undefined && size !== options.expectedSize) {
      throw new ImgctlError(
        'INTEGRITY',
        `the content is ${size} bytes, not the ${options.expectedSize} announced`,
      );
    }
    if (options.expectedSha256 !== undefined && sha256 !== options.expectedSha256) {
      throw new ImgctlError(
        'INTEGRITY',
        `the content's sha256 is ${sha256}, not the expected ${printable(options.expectedSha256)}`,
      );
    }
    return staged(storeDir, tmp, { sha256, size });
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}

/**
 * Content that a program writes (e.g. `qemu-img convert`): `write` gets a fresh temporary path
 * of the store and must leave the complete content there; it is then fsynced and hashed.
 */
export async function stageBlobWith(
  storeDir: string,
  write: (tmp: string) => Promise<void>,
  options: ProgressOptions = {},
): Promise<StagedBlob> {
  const tmp = await newTmpFile(storeDir);
  try {
    await write(tmp);
    const st = await statSource(tmp, tmp);
    const handle = await open(tmp, 'r');
    let result: { sha256: string; size: number };
    try {
      // the disk writes the content back while it is hashed from the page cache
      const extents = await extentsOf(tmp, st, options);
      [, result] = await Promise.all([handle.sync(), pump(handle, extents, undefined, options)]);
    } finally {
      await handle.close();
    }
    return staged(storeDir, tmp, result);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}

/** sha256 (hex) of a file's content; holes of a sparse file are hashed as zeros, not read. */
export async function hashFile(file: string, options: ProgressOptions = {}): Promise<string> {
  const st = await statSource(resolve(file), file);
  const handle = await open(file, 'r');
  try {
    return (await pump(handle, await extentsOf(file, st, options), undefined, options)).sha256;
  } finally {
    await handle.close();
  }
}

/** true when the blob exists and its content hashes to its name. */
export async function verifyBlob(
  storeDir: string,
  sha256: string,
  options: ProgressOptions = {},
): Promise<boolean> {
  try {
    return (await hashFile(blobPath(storeDir, sha256), options)) === sha256;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    if (error instanceof ImgctlError && error.code === 'NOT_FOUND') return false;
    throw error;
  }
}

/** Every entry under .blobs/sha256/: `sha256` is the file name, `valid` whether it can be a blob name there. */
export async function listBlobs(
  storeDir: string,
): Promise<Array<{ sha256: string; path: string; valid: boolean }>> {
  const root = storePaths.blobsDir(storeDir);
  const found: Array<{ sha256: string; path: string; valid: boolean }> = [];
  for (const prefix of await readdirOrEmpty(root)) {
    for (const name of await readdirOrEmpty(join(root, prefix))) {
      found.push({
        sha256: name,
        path: join(root, prefix, name),
        valid: SHA256_HEX.test(name) && name.startsWith(prefix) && prefix.length === 2,
      });
    }
  }
  return found.sort((a, b) => a.path.localeCompare(b.path));
}

/**
 * Removes the temporary files of writers that are gone (the writer's pid is part of the name);
 * returns their store-relative paths.
 */
export async function removeStaleTmpFiles(storeDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdirOrEmpty(blobTmpDir(storeDir))) {
    const pid = Number.parseInt(name, 10);
    if (isAlive(pid)) continue;
    await rm(join(blobTmpDir(storeDir), name), { recursive: true, force: true });
    removed.push(`.blobs/tmp/${name}`);
  }
  return removed;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

async function newTmpFile(storeDir: string): Promise<string> {
  const dir = blobTmpDir(storeDir);
  await mkdir(dir, { recursive: true });
  return join(dir, `${process.pid}-${randomBytes(6).toString('hex')}.part`);
}

async function statSource(source: string, shown: string) {
  let st;
  try {
    st = await stat(source);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new ImgctlError('NOT_FOUND', `${printable(shown)} does not exist`);
    throw error;
  }
  if (!st.isFile() && !st.isBlockDevice()) {
    throw new ImgctlError(
      'VALIDATION',
      `${printable(shown)} is not a regular file or a block device`,
    );
  }
  return st;
}

function staged(
  storeDir: string,
  tmp: string,
  result: { sha256: string; size: number },
): StagedBlob {
  return {
    path: tmp,
    ...result,
    commit: () => placeBlob(storeDir, tmp, result),
    discard: () => rm(tmp, { force: true }),
  };
}

/**
 * Renames a complete, fsynced temporary file to its blob path. A blob already there is replaced
 * all the same (the new copy is known good, the old one may have rotted), and reported reused.
 */
async function placeBlob(
  storeDir: string,
  tmp: string,
  { sha256, size }: { sha256: string; size: number },
): Promise<BlobInfo> {
  const target = blobPath(storeDir, sha256);
  const reused = (await stat(target).catch(() => undefined))?.isFile() === true;
  await mkdir(dirname(target), { recursive: true });
  await chmod(tmp, 0o444);
  await rename(tmp, target);
  await syncDirectory(dirname(target));
  if (!reused) await syncDirectory(dirname(dirname(target)));
  return { sha256, size, reused };
}

/**
 * A file without holes: the kernel copies it (copy_file_range, no trip through this process)
 * while this process hashes the source. Both read the same pages at about the same time, so
 * the disk reads the file once; every SYNC_EVERY bytes hashed, writeback of the copy is started
 * (fdatasync from here), so the disk writes while it reads instead of all at the end. The source must not change meanwhile: its size, inode, mtime and
 * ctime are compared before and after, and a change fails the copy.
 */
async function copyDenseFile(
  source: string,
  tmp: string,
  before: Stats,
  options: ProgressOptions,
): Promise<{ sha256: string; size: number }> {
  const src = await open(source, 'r');
  let hashed: { sha256: string; size: number };
  // Writeback of the copy starts while it is made (the hash runs about in step with it), as
  // pump does for the files it writes itself: the final fsync then has little left to do.
  let synced = 0;
  let flushing: Promise<void> | undefined;
  const onProgress = (done: number, total: number) => {
    if (done - synced >= SYNC_EVERY && !flushing) {
      synced = done;
      flushing = settle(datasyncFile(tmp).finally(() => (flushing = undefined)));
    }
    options.onProgress?.(done, total);
  };
  try {
    const [copied, hashing] = await Promise.allSettled([
      copyFile(source, tmp, constants.COPYFILE_EXCL),
      pump(src, [{ start: 0, length: before.size, data: true }], undefined, {
        ...options,
        onProgress,
      }),
    ]);
    await flushing;
    if (hashing.status === 'rejected') throw hashing.reason;
    if (copied.status === 'rejected') throw copied.reason;
    hashed = hashing.value;
  } finally {
    await src.close();
  }
  await assertUnchanged(source, before, (await stat(tmp)).size === hashed.size);
  const out = await open(tmp, 'r');
  try {
    await out.sync();
  } finally {
    await out.close();
  }
  return hashed;
}

/** Starts (and awaits) writeback of a file being written elsewhere; a file not there yet is skipped. */
async function datasyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r').catch(() => undefined);
  if (!handle) return;
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** A copy-on-write clone when the filesystem can make one (btrfs, XFS); false otherwise. */
async function tryReflink(source: string, target: string): Promise<boolean> {
  try {
    await copyFile(source, target, constants.COPYFILE_FICLONE_FORCE | constants.COPYFILE_EXCL);
    return true;
  } catch {
    // Not supported here (ext4, tmpfs, across filesystems): the plain copy reports real errors.
    await rm(target, { force: true });
    return false;
  }
}

/**
 * The runs of data and holes of a regular file, or undefined to read it all. Only a file that
 * occupies less than its size has holes worth asking qemu-img about.
 */
async function extentsOf(
  file: string,
  st: { size: number; blocks: number; isFile(): boolean },
  options: ProgressOptions,
): Promise<Extent[] | undefined> {
  if (!st.isFile()) return undefined;
  if (st.blocks * 512 >= st.size) return [{ start: 0, length: st.size, data: true }];
  try {
    const extents = await qemuImgMap(file, options);
    const end = extents.reduce((max, e) => Math.max(max, e.start + e.length), 0);
    return end === st.size ? extents : [{ start: 0, length: st.size, data: true }];
  } catch (error) {
    options.signal?.throwIfAborted();
    if (error instanceof ImgctlError) return [{ start: 0, length: st.size, data: true }];
    throw error;
  }
}

interface Slot {
  buf: Buffer;
  /** the pending write from this buffer; settled promises only (see settle) */
  busy: Promise<void>;
}

function makeSlots(): Slot[] {
  return Array.from({ length: SLOTS }, () => ({
    buf: Buffer.allocUnsafeSlow(CHUNK),
    busy: Promise.resolve(),
  }));
}

/** Attaches a handler at once (no unhandled rejection); the error still surfaces on await. */
/**
 * Throws FAILED when `source` is no longer the file `before` described (written to, replaced)
 * or `consistent` is false: its copy cannot be trusted.
 */
export async function assertUnchanged(
  source: string,
  before: Stats,
  consistent = true,
): Promise<void> {
  const after = await stat(source);
  if (
    !consistent ||
    after.size !== before.size ||
    after.ino !== before.ino ||
    after.mtimeMs !== before.mtimeMs ||
    after.ctimeMs !== before.ctimeMs
  )
    throw new ImgctlError('FAILED', 'the file changed while it was being added', {
      hint: 'run the command again once nothing writes to the file (e.g. the VM using it is shut down)',
    });
}

function settle(promise: Promise<unknown>): Promise<void> {
  const done = promise.then(() => undefined);
  done.catch(() => undefined);
  return done;
}

interface Piece {
  pos: number;
  len: number;
  hole: boolean;
}

/**
 * Reads `src` (the extents given, or everything up to EOF when undefined), hashing every byte
 * and, with `out`, writing the non-zero blocks at the same offsets. Reads run one chunk ahead of
 * hashing and writes trail behind it, so disk and CPU overlap.
 */
async function pump(
  src: FileHandle,
  extents: Extent[] | undefined,
  out: FileHandle | undefined,
  options: ProgressOptions,
): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  const total = extents ? extents.reduce((sum, e) => sum + e.length, 0) : Number.NaN;
  const pieces = piecesOf(extents);
  const slots = makeSlots();
  let slotIndex = 0;
  const start = (piece: Piece | undefined) => {
    if (!piece) return undefined;
    if (piece.hole) return Promise.resolve({ piece, slot: undefined, n: piece.len });
    const slot = slots[slotIndex]!;
    slotIndex = (slotIndex + 1) % SLOTS;
    return slot.busy
      .then(() => readFully(src, slot.buf, piece.len, piece.pos))
      .then((n) => ({ piece, slot, n }));
  };
  let size = 0;
  let unsynced = 0;
  let flushing: Promise<void> | undefined;
  try {
    const queue: Array<Promise<{ piece: Piece; slot: Slot | undefined; n: number }>> = [];
    const readAhead = () => {
      while (queue.length < READ_AHEAD) {
        const next = start(pieces.next().value);
        if (!next) break;
        next.catch(() => undefined); // awaited in turn; a kill of the loop must not leave it unhandled
        queue.push(next);
      }
    };
    readAhead();
    while (queue.length > 0) {
      const { piece, slot, n } = await queue.shift()!;
      options.signal?.throwIfAborted();
      const short = n < piece.len;
      if (short) {
        // end of the content: later reads (all past the end) are dropped
        await Promise.all(queue.splice(0).map((q) => q.catch(() => undefined)));
      } else readAhead();
      if (short && extents) {
        throw new ImgctlError('FAILED', 'the file shrank while it was being read', {
          hint: 'run the command again once nothing writes to the file',
        });
      }
      if (slot) {
        hash.update(slot.buf.subarray(0, n));
        if (out) {
          slot.busy = settle(writeNonZero(out, slot.buf, n, piece.pos));
          unsynced += n;
          if (unsynced >= SYNC_EVERY && !flushing) {
            // Start writeback now rather than leave it all to the final fsync: the disk then
            // works while we hash, and the copy ends about when the hashing does.
            unsynced = 0;
            flushing = settle(out.datasync()).finally(() => (flushing = undefined));
          }
        }
      } else {
        for (let done = 0; done < n; done += CHUNK)
          hash.update(ZEROS.subarray(0, Math.min(CHUNK, n - done)));
      }
      size += n;
      options.onProgress?.(size, total);
    }
    await Promise.all([...slots.map((s) => s.busy), flushing]);
  } finally {
    await Promise.all([...slots, { busy: flushing }].map((s) => s.busy?.catch(() => undefined)));
  }
  return { sha256: hash.digest('hex'), size };
}

function* piecesOf(extents: Extent[] | undefined): Generator<Piece, undefined> {
  if (!extents) {
    for (let pos = 0; ; pos += CHUNK) yield { pos, len: CHUNK, hole: false };
  }
  for (const e of extents) {
    const end = e.start + e.length;
    // Holes are hashed in one piece each (no buffer, no read); data in chunks.
    if (!e.data) yield { pos: e.start, len: e.length, hole: true };
    else
      for (let pos = e.start; pos < end; pos += CHUNK)
        yield { pos, len: Math.min(CHUNK, end - pos), hole: false };
  }
  return undefined;
}

async function readFully(src: FileHandle, buf: Buffer, len: number, pos: number): Promise<number> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await src.read(buf, done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Writes the blocks of buf[0, n) that are not all zero at `pos`; zero blocks stay holes. */
/**
 * Writes the first `n` bytes of `buf` at `pos`, leaving out its all-zero 64 KiB blocks (a file
 * then keeps holes there); resolves with how many bytes were left out.
 */
export async function writeNonZero(
  out: FileHandle,
  buf: Buffer,
  n: number,
  pos: number,
): Promise<number> {
  const writes: Promise<void>[] = [];
  let runStart = -1;
  let skipped = 0;
  for (let off = 0; off < n; off += BLOCK) {
    const end = Math.min(off + BLOCK, n);
    const zero = buf.compare(ZEROS, 0, end - off, off, end) === 0;
    if (zero) skipped += end - off;
    if (!zero && runStart < 0) runStart = off;
    if (zero && runStart >= 0) {
      writes.push(writeFully(out, buf, runStart, off, pos));
      runStart = -1;
    }
  }
  if (runStart >= 0) writes.push(writeFully(out, buf, runStart, n, pos));
  await Promise.all(writes);
  return skipped;
}

/** Writes `buf[from, to)` at `pos + from`, however many calls it takes. */
export async function writeFully(
  out: FileHandle,
  buf: Buffer,
  from: number,
  to: number,
  pos: number,
): Promise<void> {
  let off = from;
  while (off < to) {
    const { bytesWritten } = await out.write(buf, off, to - off, pos + off);
    off += bytesWritten;
  }
}
