/**
 * Extraction of an archive into the import's stage, streamed in bounded memory: every member is
 * checked against the manifest (kind, name, size) before a byte of it is written, and hashed
 * while it is written.
 */
import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, mkdir, open, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import { ImgctlError } from '../util/errors.ts';
import { isValidName, printable } from '../util/names.ts';
import { decode, type Source, type SourceOptions } from './import-source.ts';
import {
  isSafeRelPath,
  isSha256,
  MANIFEST_NAME,
  type Manifest,
  PACK_FORMAT,
  PACK_LIMITS,
} from './pack.ts';

export interface ImportProgress {
  /** bytes of file and blob content extracted so far */
  done: number;
  /** from the manifest, once it has been read */
  total?: number;
}

export interface ExtractOptions extends SourceOptions {
  onProgress?: (progress: ImportProgress) => void;
}

interface Expected {
  kind: 'file' | 'dir' | 'blob';
  size: number;
  sha256?: string;
  mode: number;
  dest: string;
}

export function malformed(message: string, hint?: string): ImgctlError {
  return new ImgctlError('VALIDATION', `refused the archive: ${message}`, {
    hint: hint ?? 'only archives made by `imgctl pack` are imported; nothing was changed',
  });
}

/** CONFLICT: an image of that name is in the store (import without --force). */
export function imageExists(name: string): ImgctlError {
  return new ImgctlError('CONFLICT', `image '${name}' already exists`, {
    hint: `import it under another name with --as NEW, or replace it with --force`,
  });
}

const ZEROES = Buffer.alloc(1024 * 1024);
const MANIFEST_HEAD = Buffer.from(`${MANIFEST_NAME}\0`);

function isZero(chunk: Buffer): boolean {
  return chunk.length <= ZEROES.length && chunk.equals(ZEROES.subarray(0, chunk.length));
}

/**
 * Streams the archive into `stage` (`image/…` and `blobs/<hex>`), checking each member against
 * the manifest before writing it and hashing it while it is written. Returns the manifest.
 */
export async function extractArchive(
  input: Source,
  stage: string,
  options: ExtractOptions,
): Promise<Manifest> {
  const parser = new Parser({ strict: true, maxMetaEntrySize: 64 * 1024, brotli: false });
  let failure: unknown;
  let onFailure: (() => void) | undefined;
  const fail = (error: unknown) => {
    if (failure === undefined) failure = error;
    onFailure?.();
  };
  const failed = new Promise<never>((_, reject) => {
    onFailure = () => reject(failure);
  });
  failed.catch(() => undefined);

  let manifest: Manifest | undefined;
  const expected = new Map<string, Expected>();
  const seen = new Set<string>();
  let entries = 0;
  let sawEof = false;
  let done = 0;
  const work: Promise<void>[] = [];
  /** positional writes in flight; the input buffers they read from are not refilled until they land */
  const writes = new Set<Promise<unknown>>();

  parser.on('error', (error: Error) => fail(malformed(tarMessage(error))));
  parser.on('ignoredEntry', (entry: ReadEntry) =>
    fail(malformed(`member '${printable(entry.path)}' has an oversized or unsupported header`)),
  );
  parser.on('eof', () => {
    sawEof = true;
  });
  parser.on('entry', (entry: ReadEntry) => {
    if (failure !== undefined) {
      entry.resume();
      return;
    }
    try {
      entries++;
      if (entries > PACK_LIMITS.entries)
        throw malformed(`more than ${PACK_LIMITS.entries} members`);
      refuseType(entry);
      if (manifest === undefined) {
        if (entry.path !== MANIFEST_NAME || entry.type !== 'File')
          throw malformed(
            `the first member must be ${MANIFEST_NAME}, not '${printable(entry.path)}'`,
          );
        if (entry.size > PACK_LIMITS.manifestBytes)
          throw malformed(
            `${MANIFEST_NAME} declares ${entry.size} bytes (at most ${PACK_LIMITS.manifestBytes})`,
          );
        // Synchronously, on 'end': the parser emits the next member right after this one ends.
        const chunks: Buffer[] = [];
        entry.on('data', (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
        entry.on('end', () => {
          try {
            const m = parseManifest(Buffer.concat(chunks).toString('utf8'));
            for (const [name, e] of expectedMembers(m, stage)) expected.set(name, e);
            manifest = m;
            work.push(checkSpace(stage, totalBytes(m)).catch(fail));
          } catch (error) {
            fail(error);
          }
        });
        return;
      }
      const name = checkPath(entry.path);
      const want = expected.get(name);
      if (!want) throw malformed(`member '${printable(entry.path)}' is not in the manifest`);
      if (seen.has(name)) throw malformed(`member '${printable(entry.path)}' appears twice`);
      seen.add(name);
      if ((want.kind === 'dir') !== (entry.type === 'Directory'))
        throw malformed(`member '${printable(entry.path)}' is not the kind the manifest lists`);
      if (want.kind === 'dir') {
        work.push(mkdir(want.dest, { recursive: true }).then(() => undefined, fail));
        entry.resume();
        return;
      }
      if (entry.size !== want.size)
        throw malformed(
          `member '${printable(entry.path)}' declares ${entry.size} bytes but the manifest lists ${want.size}`,
        );
      work.push(
        writeMember(entry, want, writes, failed, (n) => {
          done += n;
          options.onProgress?.({ done, total: manifest ? totalBytes(manifest) : undefined });
        }).catch(fail),
      );
    } catch (error) {
      fail(error);
      entry.resume();
    }
  });

  const ended = new Promise<void>((resolveEnd) => parser.on('end', () => resolveEnd()));
  let drained: (() => void) | undefined;
  parser.on('drain', () => drained?.());
  try {
    let head: Buffer | undefined = Buffer.alloc(0);
    const beforeRead = () => Promise.all(writes);
    for await (let chunk of decode(input, options, stage, beforeRead)) {
      if (failure !== undefined) break;
      if (head !== undefined) {
        // Only a plain tar starting with the manifest goes to the parser: no nested compression.
        head = Buffer.concat([head, chunk]);
        if (head.length < 512) continue;
        if (!head.subarray(0, MANIFEST_NAME.length + 1).equals(MANIFEST_HEAD))
          throw malformed(`the archive does not start with ${MANIFEST_NAME}`);
        chunk = head;
        head = undefined;
      }
      if (!parser.write(chunk)) {
        await Promise.race([new Promise<void>((r) => (drained = r)), failed]);
        drained = undefined;
      }
    }
    if (head !== undefined && failure === undefined)
      throw malformed(head.length === 0 ? 'the archive is empty' : 'the archive is truncated');
    if (failure !== undefined) throw failure;
    parser.end();
    await Promise.race([ended, failed]);
    await Promise.race([Promise.all(work), failed]);
    if (failure !== undefined) throw failure;
  } catch (error) {
    if ('stream' in input) input.stream.destroy();
    // Recorded as the failure before waiting: a member cut off mid-way waits for it, not for
    // data that will never come.
    fail(
      error instanceof ImgctlError
        ? error
        : new ImgctlError('FAILED', `reading the archive failed: ${(error as Error).message}`, {
            cause: error,
          }),
    );
    await Promise.allSettled(work);
    throw failure;
  }
  if (!manifest) throw malformed('the archive is empty');
  const missing = [...expected.keys()].filter((name) => !seen.has(name));
  if (missing.length > 0)
    throw malformed(
      `the archive is truncated or incomplete: ${missing.length} member(s) missing, first '${printable(missing[0]!)}'`,
    );
  if (!sawEof) throw malformed('the archive is truncated (no end-of-archive marker)');
  return manifest;
}

function tarMessage(error: Error): string {
  const message = error.message.replace(/^TAR_[A-Z_]+: /, '');
  return /truncated/i.test(message) ? `the archive is truncated (${message})` : message;
}

function refuseType(entry: ReadEntry): void {
  const type = entry.type as string;
  if (type === 'File' || type === 'OldFile' || type === 'Directory') return;
  const path = printable(entry.path);
  if (type === 'Link' || type === 'SymbolicLink')
    throw malformed(
      `member '${path}' is a ${type === 'Link' ? 'hard link' : 'symbolic link'}; links are never extracted`,
    );
  if (type === 'CharacterDevice' || type === 'BlockDevice' || type === 'FIFO')
    throw malformed(`member '${path}' is a device node or FIFO (${type})`);
  throw malformed(`member '${path}' has the unsupported type ${type}`);
}

/** The archive name an entry path stands for, refusing absolute and `..` paths by name. */
function checkPath(path: string): string {
  if (path.startsWith('/') || /^[A-Za-z]:[\\/]/.test(path))
    throw malformed(`member '${printable(path)}' has an absolute path`);
  const trimmed = path.endsWith('/') ? path.slice(0, -1) : path;
  if (trimmed.split(/[\\/]/).includes('..'))
    throw malformed(`member '${printable(path)}' leaves the archive with '..'`);
  if (Buffer.byteLength(trimmed) > PACK_LIMITS.pathBytes + 64)
    throw malformed(`member name of ${Buffer.byteLength(trimmed)} bytes is too long`);
  return trimmed;
}

/** Parses and checks a manifest: every name safe, every size and hash well-formed, no duplicates. */
export function parseManifest(text: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformed(`${MANIFEST_NAME} is not valid JSON`);
  }
  const bad = (what: string) => malformed(`${MANIFEST_NAME}: ${what}`);
  if (typeof value !== 'object' || value === null) throw bad('not an object');
  const m = value as Record<string, unknown>;
  if (m.format !== PACK_FORMAT) throw bad(`format is not ${PACK_FORMAT}`);
  if (typeof m.image !== 'string' || !isValidName(m.image)) throw bad('image is not a valid name');
  if (!Number.isSafeInteger(m.revision) || (m.revision as number) < 1)
    throw bad('revision is not a positive integer');
  if (!Array.isArray(m.dirs) || !Array.isArray(m.files) || !Array.isArray(m.blobs))
    throw bad('dirs, files and blobs must be lists');
  if (m.dirs.length + m.files.length + m.blobs.length >= PACK_LIMITS.entries)
    throw bad(`more than ${PACK_LIMITS.entries} members`);
  const paths = new Set<string>();
  const size = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  for (const d of m.dirs) {
    if (typeof d !== 'string' || !isSafeRelPath(d))
      throw bad(`unsafe directory '${printable(String(d))}'`);
    if (paths.has(d)) throw bad(`'${printable(d)}' is listed twice`);
    paths.add(d);
  }
  for (const f of m.files as Array<Record<string, unknown>>) {
    if (typeof f !== 'object' || f === null) throw bad('a file entry is not an object');
    if (typeof f.path !== 'string' || !isSafeRelPath(f.path))
      throw bad(`unsafe file path '${printable(String(f.path))}'`);
    if (paths.has(f.path)) throw bad(`'${printable(f.path)}' is listed twice`);
    paths.add(f.path);
    if (!size(f.size) || !isSha256(f.sha256) || (f.mode !== 0o644 && f.mode !== 0o755))
      throw bad(`file '${printable(f.path)}' needs size, sha256 and mode 420 or 493`);
  }
  const blobs = new Set<string>();
  for (const b of m.blobs as Array<Record<string, unknown>>) {
    if (typeof b !== 'object' || b === null || !isSha256(b.sha256) || !size(b.size))
      throw bad('a blob entry needs sha256 and size');
    if (blobs.has(b.sha256)) throw bad(`blob ${b.sha256} is listed twice`);
    blobs.add(b.sha256);
  }
  if (!paths.has('image.yaml') || (m.dirs as string[]).includes('image.yaml'))
    throw bad('the image has no image.yaml');
  return m as unknown as Manifest;
}

function expectedMembers(m: Manifest, stage: string): Array<[string, Expected]> {
  return [
    ...m.dirs.map((d): [string, Expected] => [
      `image/${d}`,
      { kind: 'dir', size: 0, mode: 0o755, dest: join(stage, 'image', d) },
    ]),
    ...m.files.map((f): [string, Expected] => [
      `image/${f.path}`,
      {
        kind: 'file',
        size: f.size,
        sha256: f.sha256,
        mode: f.mode,
        dest: join(stage, 'image', f.path),
      },
    ]),
    ...m.blobs.map((b): [string, Expected] => [
      `blobs/sha256/${b.sha256}`,
      {
        kind: 'blob',
        size: b.size,
        sha256: b.sha256,
        mode: 0o644,
        dest: join(stage, 'blobs', b.sha256),
      },
    ]),
  ];
}

export async function checkSpace(stage: string, needed: number): Promise<void> {
  const fs = await statfs(stage);
  const free = fs.bavail * fs.bsize;
  if (needed > free) {
    throw new ImgctlError(
      'FAILED',
      `the image to import declares ${needed} bytes of content but the store has ${free} bytes free`,
      { hint: 'free some space (imgctl verify --gc removes unused blobs) and import again' },
    );
  }
}

/**
 * Writes one member to its staging file, hashing it on the way. All-zero chunks are skipped
 * (the file is extended to its size at the end), so sparse disks stay sparse. At most one
 * write is in flight: the entry is paused until it lands, which holds the parser, which holds
 * the input — memory stays bounded whatever the member's size.
 */
async function writeMember(
  entry: ReadEntry,
  want: Expected,
  writes: Set<Promise<unknown>>,
  /** rejects when the import fails elsewhere: stop waiting for data that will never come */
  failed: Promise<never>,
  onBytes: (n: number) => void,
): Promise<void> {
  await mkdir(dirname(want.dest), { recursive: true });
  const handle: FileHandle = await open(want.dest, 'wx', want.mode);
  const hash: Hash = createHash('sha256');
  let position = 0;
  let inflight: Promise<unknown> = Promise.resolve();
  try {
    await new Promise<void>((resolveWrite, reject) => {
      entry.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        const at = position;
        position += chunk.length;
        onBytes(chunk.length);
        if (isZero(chunk)) return;
        entry.pause();
        const write = handle.write(chunk, 0, chunk.length, at);
        writes.add(write);
        inflight = write.then(
          () => {
            writes.delete(write);
            entry.resume();
          },
          (error: unknown) => {
            writes.delete(write);
            reject(error);
          },
        );
      });
      entry.on('end', () => inflight.then(() => resolveWrite(), reject));
      entry.on('error', reject);
      failed.catch(reject);
    });
    await handle.truncate(position);
    await handle.sync();
  } finally {
    await inflight.catch(() => undefined);
    await handle.close();
  }
  if (position !== want.size) {
    throw malformed(`the archive is truncated: a member holds ${position} of ${want.size} bytes`);
  }
  const digest = hash.digest('hex');
  if (digest !== want.sha256) {
    throw new ImgctlError(
      'INTEGRITY',
      `refused the archive: ${want.kind === 'blob' ? 'disk content' : 'file'} ${want.kind === 'blob' ? want.sha256 : want.dest.slice(want.dest.indexOf('/image/') + 7)} does not match the manifest: sha256 ${digest}, expected ${want.sha256}`,
      { hint: 'the archive is damaged or was altered; nothing was changed' },
    );
  }
}

export function totalBytes(manifest: Manifest): number {
  let total = 0;
  for (const f of manifest.files) total += f.size;
  for (const b of manifest.blobs) total += b.size;
  return total;
}
