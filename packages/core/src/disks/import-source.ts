/**
 * The bytes of an archive to import: a local file, or an http(s) URL streamed as it is read;
 * decompressed by the gzip or zstd program when the archive is compressed.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { processRunner, startFilter } from '../util/process.ts';
import { compressor } from './pack.ts';

export interface SourceOptions {
  /** zstd program for .tar.zst archives (default 'zstd' on PATH) */
  zstdCommand?: string;
  /** gzip program for .tar.gz archives (default 'gzip' on PATH) */
  gzipCommand?: string;
  /** HTTP client for URL sources (default the global fetch) */
  fetch?: typeof fetch;
}

export type Source = { path: string } | { stream: Readable };

export async function openSource(source: string, options: SourceOptions): Promise<Source> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) {
    let url: URL;
    try {
      url = new URL(source);
    } catch {
      throw new ImgctlError('USAGE', `'${printable(source)}' is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ImgctlError('USAGE', `cannot import from a ${url.protocol} URL`, {
        hint: 'give a local file, an http:// or https:// URL, or an oci://HOST/REPO[:TAG] reference',
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
export async function* decode(
  source: Source,
  programs: Pick<SourceOptions, 'gzipCommand' | 'zstdCommand'>,
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
  options: Pick<SourceOptions, 'gzipCommand' | 'zstdCommand'> & {
    stage: string;
    beforeRead: () => Promise<unknown>;
  },
): AsyncGenerator<Buffer> {
  const { program, unpackArgs, install } = compressor(compression, options);
  const native = typeof (input as Readable & { fd?: unknown }).fd === 'number';
  const fifo = join(options.stage, 'decompressed.fifo');
  await processRunner().run('mkfifo', ['-m', '600', '--', fifo]);
  // Read-write first (it does not wait for a reader), so opening the read end does not wait
  // either; once the program holds its copy, ours is closed and the program's exit is EOF.
  const writeEnd = await open(fifo, 'r+');
  let readEnd: FileHandle | undefined;
  let child;
  try {
    readEnd = await open(fifo, 'r');
    child = startFilter(program, unpackArgs, {
      stdin: native ? input : 'pipe',
      stdout: createWriteStream(fifo, { fd: writeEnd.fd, autoClose: false }),
    });
  } catch (error) {
    await readEnd?.close();
    throw error;
  } finally {
    await writeEnd.close();
  }
  const done = child.done.catch((error: unknown) => {
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
