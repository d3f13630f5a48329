import { createHash, type Hash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import {
  chmod,
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  statfs,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { execa } from 'execa';
import { Parser, type ReadEntry } from 'tar';
import { formatProblem, parseYaml, syncDirectory } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { withStoreLock } from '../store/lock.ts';
import { assertName, isValidName, printable } from '../util/names.ts';
import {
  compressor,
  isSafeRelPath,
  isSha256,
  MANIFEST_NAME,
  type Manifest,
  PACK_FORMAT,
  PACK_LIMITS,
} from './pack.ts';
import { exists, storePaths } from '../store/store.ts';
import type { ImageDoc } from '../store/types.ts';
import { validateDocument } from '../validate/document.ts';
import { editYamlText } from '../yaml/yaml-edit.ts';

export interface ImportProgress {
  /** bytes of file and blob content extracted so far */
  done: number;
  /** from the manifest, once it has been read */
  total?: number;
}

export interface ImportOptions {
  /** import under this name instead of the archive's */
  as?: string;
  /** replace an existing image of the same name */
  force?: boolean;
  onProgress?: (progress: ImportProgress) => void;
  /** zstd program for .tar.zst archives (default 'zstd' on PATH) */
  zstdCommand?: string;
  /** gzip program for .tar.gz archives (default 'gzip' on PATH) */
  gzipCommand?: string;
  /** HTTP client for URL sources (default the global fetch) */
  fetch?: typeof fetch;
}

export interface ImportResult {
  image: string;
  /** the name inside the archive (differs with --as) */
  packedAs: string;
  revision: number;
  source: string;
  files: number;
  blobs: number;
  /** blobs the store already held (content-addressed, so not written again) */
  blobsReused: number;
  bytes: number;
  /** true when --force replaced an image of the same name */
  replaced: boolean;
}

const STAGE_PREFIX = 'import-';

/**
 * Imports an archive made by `packImage` (a file path, or an http(s) URL streamed as it is
 * read). Extraction is streamed into a staging directory under `.state/` in bounded memory,
 * and every member is checked before a byte of it is written: only regular files and
 * directories the manifest lists, each with exactly the size the manifest declares. Every
 * hash is verified and the descriptor validated before anything enters the store; then, under
 * the store lock, blobs are moved into `.blobs/` and the image directory is renamed into
 * `images/` in one step. A malformed or unsafe archive is a VALIDATION error (exit 3), a hash
 * mismatch an INTEGRITY error (exit 7); either way the store is unchanged.
 */
export async function importArchive(
  storeDir: string,
  source: string,
  options: ImportOptions = {},
): Promise<ImportResult> {
  if (options.as !== undefined) assertName('image', options.as);
  await withStoreLock(storeDir, () => cleanStaleImports(storeDir));
  const stage = join(
    storePaths.stateDir(storeDir),
    `${STAGE_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  await mkdir(join(stage, 'image'), { recursive: true });
  await mkdir(join(stage, 'blobs'), { recursive: true });
  try {
    const input = await openSource(source, options);
    const manifest = await extractArchive(input, stage, options);
    const name = options.as ?? manifest.image;
    const revision = await prepareImage(join(stage, 'image'), manifest, name);
    return await withStoreLock(storeDir, async () => {
      const target = storePaths.imageDir(storeDir, name);
      const present = await exists(target);
      if (present && !options.force) {
        throw new ImgctlError('CONFLICT', `image '${name}' already exists`, {
          hint: `import it under another name with --as NEW, or replace it with --force`,
        });
      }
      let reused = 0;
      for (const blob of manifest.blobs) {
        const dest = storePaths.blobFile(storeDir, blob.sha256);
        if (await exists(dest)) {
          reused++;
          continue;
        }
        await mkdir(dirname(dest), { recursive: true });
        await chmod(join(stage, 'blobs', blob.sha256), 0o444);
        await rename(join(stage, 'blobs', blob.sha256), dest);
        await syncDirectory(dirname(dest));
        await syncDirectory(dirname(dirname(dest)));
      }
      await mkdir(storePaths.imagesDir(storeDir), { recursive: true });
      if (present) {
        // The old image goes into the stage, named, so a crash between the two renames is
        // undone by the next import (cleanStaleImports puts it back).
        await writeFile(join(stage, 'target'), name);
        await rename(target, join(stage, 'old'));
      }
      await rename(join(stage, 'image'), target);
      await syncDirectory(storePaths.imagesDir(storeDir));
      return {
        image: name,
        packedAs: manifest.image,
        revision,
        source,
        files: manifest.files.length,
        blobs: manifest.blobs.length,
        blobsReused: reused,
        bytes: totalBytes(manifest),
        replaced: present,
      };
    });
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/**
 * Removes the staging directories of imports whose process is gone; an image an interrupted
 * `--force` import had moved aside is put back first. Call holding the store lock.
 */
export async function cleanStaleImports(storeDir: string): Promise<string[]> {
  const stateDir = storePaths.stateDir(storeDir);
  let names: string[];
  try {
    names = await readdir(stateDir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of names) {
    const match = /^import-(\d+)-[0-9a-f]+$/.exec(entry);
    if (!match || isAlive(Number(match[1]))) continue;
    const dir = join(stateDir, entry);
    const old = join(dir, 'old');
    const target = await readFile(join(dir, 'target'), 'utf8').catch(() => undefined);
    if (target !== undefined && isValidName(target) && (await exists(old))) {
      const imageDir = storePaths.imageDir(storeDir, target);
      if (!(await exists(imageDir))) {
        await rename(old, imageDir);
        await syncDirectory(storePaths.imagesDir(storeDir));
      }
    }
    await rm(dir, { recursive: true, force: true });
    removed.push(entry);
  }
  return removed;
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

function totalBytes(manifest: Manifest): number {
  let total = 0;
  for (const f of manifest.files) total += f.size;
  for (const b of manifest.blobs) total += b.size;
  return total;
}

type Source = { path: string } | { stream: Readable };

async function openSource(source: string, options: ImportOptions): Promise<Source> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) {
    let url: URL;
    try {
      url = new URL(source);
    } catch {
      throw new ImgctlError('USAGE', `'${printable(source)}' is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ImgctlError('USAGE', `cannot import from a ${url.protocol} URL`, {
        hint: 'give a local file or an http:// or https:// URL',
      });
    }
    let response: Response;
    try {
      response = await (options.fetch ?? fetch)(url, { redirect: 'follow' });
    } catch (error) {
      throw new ImgctlError('FAILED', `cannot fetch ${url.href}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new ImgctlError(
        response.status === 404 ? 'NOT_FOUND' : 'FAILED',
        `fetching ${url.href} failed: HTTP ${response.status} ${response.statusText}`,
      );
    }
    const body = Readable.fromWeb(response.body as WebReadableStream);
    // A connection that breaks off mid-archive is a failed download, not a bad archive.
    async function* download(): AsyncGenerator<Buffer> {
      try {
        yield* body;
      } catch (error) {
        throw new ImgctlError(
          'FAILED',
          `the download of ${url.href} broke off: ${(error as Error).message}`,
          { cause: error, hint: 'nothing was imported; run the same import again' },
        );
      }
    }
    return { stream: Readable.from(download(), { objectMode: false }) };
  }
  const path = resolve(source);
  let st;
  try {
    st = await stat(path);
  } catch {
    throw new ImgctlError('NOT_FOUND', `no archive at ${path}`);
  }
  if (!st.isFile()) throw new ImgctlError('USAGE', `${path} is not a file`);
  return { path };
}

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

const RING_CHUNK = 1024 * 1024;

/**
 * A file's bytes read into a ring of three reused buffers: no garbage per chunk, so memory stays
 * flat however large the file (the GC lets tens of MB of discarded buffers pile up otherwise).
 * `beforeRead` must resolve only once nothing still uses the buffer about to be refilled.
 */
async function* readRing(
  handle: FileHandle,
  beforeRead: () => Promise<unknown>,
): AsyncGenerator<Buffer> {
  const ring = [0, 1, 2].map(() => Buffer.allocUnsafe(RING_CHUNK));
  for (let i = 0; ; i++) {
    await beforeRead();
    const buffer = ring[i % ring.length]!;
    // Filled whole (a FIFO returns at most its 64 KiB at a time): the parsing, hashing and
    // writing downstream then go by the MiB, as for a file.
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, null);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled === 0) return;
    yield buffer.subarray(0, filled);
  }
}

/**
 * The archive's tar bytes: the input itself, or it decompressed by the gzip or zstd program (a
 * process of its own: its memory is not ours, and it works on the other core). A local file is
 * given to the program as its stdin directly.
 */
async function* decode(
  source: Source,
  programs: Pick<ImportOptions, 'gzipCommand' | 'zstdCommand'>,
  stage: string,
  beforeRead: () => Promise<unknown>,
): AsyncGenerator<Buffer> {
  if ('path' in source) {
    const file = await open(source.path, 'r');
    try {
      // read at an explicit position: the file's own offset stays at 0 for what follows
      const magic = Buffer.alloc(4);
      await file.read(magic, 0, 4, 0);
      const compression = compressionOf(magic);
      if (compression === 'none') yield* readRing(file, beforeRead);
      // a stream with an fd is handed to the program as its stdin, not piped through here
      else
        yield* decompress(
          compression,
          createReadStream(source.path, { fd: file.fd, autoClose: false }),
          { ...programs, stage, beforeRead },
        );
    } finally {
      await file.close();
    }
    return;
  }
  const iterator = source.stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  const pending: Buffer[] = [];
  while (head.length < 4) {
    const next = await iterator.next();
    if (next.done) break;
    pending.push(next.value);
    head = Buffer.concat([head, next.value]);
  }
  async function* rest(): AsyncGenerator<Buffer> {
    yield* pending;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  }
  const compression = compressionOf(head);
  if (compression === 'none') yield* rest();
  else yield* decompress(compression, Readable.from(rest()), { ...programs, stage, beforeRead });
}

function compressionOf(head: Buffer): 'none' | 'gzip' | 'zstd' {
  if (head.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip';
  if (head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/**
 * The output of the gzip or zstd program decompressing `input`: a file's stream (one with an fd,
 * which the program reads itself) or any other stream, piped to it. The program writes into a
 * FIFO in the stage, which is read into the same three reused buffers as a plain tar (a pipe
 * read through Node would allocate a new buffer per chunk, tens of MB of garbage between two
 * collections).
 */
async function* decompress(
  compression: 'gzip' | 'zstd',
  input: Readable,
  options: Pick<ImportOptions, 'gzipCommand' | 'zstdCommand'> & {
    stage: string;
    beforeRead: () => Promise<unknown>;
  },
): AsyncGenerator<Buffer> {
  const { program, unpackArgs, install } = compressor(compression, options);
  const native = typeof (input as Readable & { fd?: unknown }).fd === 'number';
  const fifo = join(options.stage, 'decompressed.fifo');
  await execa('mkfifo', ['-m', '600', '--', fifo]);
  // Read-write first (it does not wait for a reader), so opening the read end does not wait
  // either; once the program holds its copy, ours is closed and the program's exit is EOF.
  const writeEnd = await open(fifo, 'r+');
  let readEnd: FileHandle | undefined;
  let child;
  try {
    readEnd = await open(fifo, 'r');
    child = execa(program, unpackArgs, {
      stdin: native ? input : 'pipe',
      stdout: createWriteStream(fifo, { fd: writeEnd.fd, autoClose: false }),
      stderr: 'pipe',
      buffer: { stderr: true },
    });
  } catch (error) {
    await readEnd?.close();
    throw error;
  } finally {
    await writeEnd.close();
  }
  const done = child.catch((error: unknown) => {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new ImgctlError(
      missing ? 'USAGE' : 'VALIDATION',
      missing
        ? `this archive is ${compression}-compressed and the '${program}' program is not installed`
        : `the archive is not valid ${compression} data`,
      { hint: `install ${install} (Debian: apt-get install ${install})`, cause: error },
    );
  });
  done.catch(() => undefined);
  // A failed download ends the program's input; the download's own error is then what is
  // reported, not the truncated compressed data the program complains about.
  let inputError: unknown;
  if (!native) {
    input.on('error', (error) => {
      inputError = error;
      child.stdin!.end();
    });
    input.pipe(child.stdin!).on('error', () => undefined);
  }
  try {
    yield* readRing(readEnd, options.beforeRead);
    await done.catch((error: unknown) => {
      throw inputError ?? error;
    });
    if (inputError !== undefined) throw inputError;
  } finally {
    child.kill();
    await done.catch(() => undefined);
    await readEnd.close();
  }
}

interface Expected {
  kind: 'file' | 'dir' | 'blob';
  size: number;
  sha256?: string;
  mode: number;
  dest: string;
}

function malformed(message: string, hint?: string): ImgctlError {
  return new ImgctlError('VALIDATION', `refused the archive: ${message}`, {
    hint: hint ?? 'only archives made by `imgctl pack` are imported; nothing was changed',
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
async function extractArchive(
  input: Source,
  stage: string,
  options: ImportOptions,
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

async function checkSpace(stage: string, needed: number): Promise<void> {
  const fs = await statfs(stage);
  const free = fs.bavail * fs.bsize;
  if (needed > free) {
    throw new ImgctlError(
      'FAILED',
      `the archive declares ${needed} bytes of content but the store has ${free} bytes free`,
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

/**
 * Checks the staged image and, with another name, renames it: the descriptor's `name` and
 * every record's `image`. Returns the revision.
 */
async function prepareImage(dir: string, manifest: Manifest, name: string): Promise<number> {
  const imagePath = join(dir, 'image.yaml');
  let text = await readFile(imagePath, 'utf8');
  const initial = parseYaml('image.yaml', text).value as Partial<ImageDoc> | undefined;
  if (initial?.name !== manifest.image) {
    throw malformed(
      `the packed image.yaml names '${printable(String(initial?.name))}', the manifest '${manifest.image}'`,
    );
  }
  if (name !== manifest.image) {
    text = editYamlText(text, [{ path: ['name'], value: name }]);
    await writeFile(imagePath, text);
  }
  const display = `images/${name}/image.yaml`;
  const yaml = parseYaml(display, text);
  const problems = validateDocument('Image', yaml, { expectedName: name });
  const image = yaml.value as ImageDoc;
  const packed = new Set(manifest.blobs.map((b) => b.sha256));
  if (problems.length === 0) {
    for (const disk of image.disks) {
      if (disk.blob === true && disk.sha256 !== undefined && !packed.has(disk.sha256)) {
        throw malformed(
          `disk '${disk.id}' is stored in the store but its content is not in the archive`,
        );
      }
    }
    const used = new Set(image.disks.map((d) => d.sha256));
    for (const blob of packed) {
      if (!used.has(blob)) throw malformed(`blob ${blob} is in the archive but no disk uses it`);
    }
  }
  const recordsDir = join(dir, 'records');
  for (const file of manifest.files.map((f) => f.path)) {
    const match = /^records\/([^/]+)\.yaml$/.exec(file);
    if (!match) continue;
    const path = join(recordsDir, `${match[1]}.yaml`);
    let recordText = await readFile(path, 'utf8');
    if (name !== manifest.image) {
      recordText = editYamlText(recordText, [{ path: ['image'], value: name }]);
      await writeFile(path, recordText);
    }
    problems.push(
      ...validateDocument('ImageRecord', parseYaml(`images/${name}/${file}`, recordText), {
        expectedName: match[1],
        expectedImage: name,
      }),
    );
  }
  if (problems.length > 0) {
    throw new ImgctlError('VALIDATION', `refused the archive: the image it holds is not valid`, {
      details: problems.map(formatProblem),
      hint: 'fix the image where it was packed and pack it again; nothing was changed',
    });
  }
  return image.revision;
}
