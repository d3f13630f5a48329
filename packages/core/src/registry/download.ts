/**
 * Getting a blob: a Range GET (the registry may redirect it to its storage elsewhere), and
 * pulling one to a file — `<dest>.partial` resumed with Range, hashed as it is written, fsynced
 * and renamed to `<dest>` once its sha256 is the digest's.
 */
import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorCode, ImgctlError } from '../util/errors.ts';
import { hashFile } from '../util/hash-file.ts';
import { drain } from './http.ts';
import { isRetryableError, retryDelay } from './retry.ts';
import type { Response, Transport } from './transport.ts';
import type { RegistryOptions } from './types.ts';

/** broken transfers in a row (no byte gained) before a pull gives up */
const MAX_STALLED = 3;
const WRITE_CHUNK = 1024 * 1024;

const pullScope = (repository: string) => `repository:${repository}:pull`;

/** GET /v2/<repo>/blobs/<digest> from `offset`; the response is 200 or 206 (or 416 when asked). */
async function getBlob(
  transport: Transport,
  repository: string,
  digest: string,
  offset: number,
  expect: number[] = [],
): Promise<Response> {
  return transport.request({
    method: 'GET',
    url: `/v2/${repository}/blobs/${digest}`,
    headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
    scope: pullScope(repository),
    what: `GET blob ${digest.slice(0, 19)} from ${repository}`,
    blobRedirects: true,
    expect,
  });
}

/** The start and total of a `Content-Range: bytes START-END/TOTAL`. */
function contentRange(value: string | undefined): { start: number; total?: number } | undefined {
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(value?.trim() ?? '');
  if (!match) return undefined;
  return { start: Number(match[1]), total: match[2] === '*' ? undefined : Number(match[2]) };
}

/** Skips the first `n` bytes of a stream (a registry that ignored Range and sent it whole). */
function skip(stream: Readable, n: number): Readable {
  let left = n;
  const out = new PassThrough();
  stream.on('error', (error) => out.destroy(error));
  stream.on('data', (chunk: Buffer) => {
    if (left >= chunk.length) {
      left -= chunk.length;
      return;
    }
    if (!out.write(left > 0 ? chunk.subarray(left) : chunk)) {
      stream.pause();
      out.once('drain', () => stream.resume());
    }
    left = 0;
  });
  stream.on('end', () => out.end());
  out.on('close', () => stream.destroy());
  return out;
}

export async function openBlob(
  transport: Transport,
  repository: string,
  digest: string,
  offset = 0,
): Promise<Readable> {
  const response = await getBlob(transport, repository, digest, offset);
  if (offset === 0 || response.status === 200) {
    return offset === 0 ? response.res : skip(response.res, offset);
  }
  const range = contentRange(response.header('content-range'));
  if (range?.start !== offset) {
    response.res.destroy();
    throw new ImgctlError(
      'FAILED',
      `GET blob ${digest}: ${transport.registry} answered bytes from ${range?.start ?? '?'}, not ${offset}`,
    );
  }
  return response.res;
}

/** What a pull has in `<dest>.partial`: the hash and count of its bytes, one write in flight. */
interface PartialFile {
  path: string;
  handle: FileHandle;
  hash: Hash;
  size: number;
  writing: Promise<void>;
}

/** Writes `pieces` one after the other from `position`, however many calls it takes. */
async function writeAll(handle: FileHandle, pieces: Buffer[], position: number): Promise<void> {
  let rest = pieces;
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest, position);
    if (bytesWritten === 0) throw new Error('writing the download wrote nothing');
    position += bytesWritten;
    let skip = bytesWritten;
    while (rest.length > 0 && skip >= rest[0]!.length) {
      skip -= rest[0]!.length;
      rest = rest.slice(1);
    }
    if (skip > 0) rest = [rest[0]!.subarray(skip), ...rest.slice(1)];
  }
}

/** Appends `pieces`: hashed now and written while the next bytes arrive, one write at a time. */
async function append(file: PartialFile, pieces: Buffer[]): Promise<void> {
  await file.writing;
  let size = 0;
  for (const piece of pieces) {
    file.hash.update(piece);
    size += piece.length;
  }
  file.writing = writeAll(file.handle, pieces, file.size);
  file.size += size;
}

async function emptyPartial(file: PartialFile): Promise<void> {
  await file.writing;
  await file.handle.truncate(0);
  file.hash = createHash('sha256');
  file.size = 0;
}

/**
 * Appends a response body to the partial file, gathered into writes of WRITE_CHUNK (TLS hands on
 * 16 KiB records: written together, not copied into one buffer); rejects when it ends before
 * `total` or would go past it.
 */
async function receive(
  body: Readable,
  file: PartialFile,
  total: number | undefined,
  onProgress: RegistryOptions['onProgress'],
  what: string,
): Promise<void> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async () => {
    const pieces = pending;
    pending = [];
    pendingBytes = 0;
    await append(file, pieces);
    onProgress?.(file.size, total ?? file.size);
  };
  try {
    for await (const chunk of body) {
      const data = chunk as Buffer;
      if (total !== undefined && file.size + pendingBytes + data.length > total)
        throw new ImgctlError('INTEGRITY', `${what}: the registry sent more than ${total} bytes`);
      pending.push(data);
      pendingBytes += data.length;
      if (pendingBytes >= WRITE_CHUNK) await flush();
    }
    if (pendingBytes > 0) await flush();
  } finally {
    await file.writing;
  }
  if (total !== undefined && file.size < total)
    throw new Error(`the body ended at byte ${file.size} of ${total}`);
}

/** The size the registry says the blob has, from a 200's length or a 206's Content-Range. */
function totalSize(response: Response): number | undefined {
  if (response.status === 206) return contentRange(response.header('content-range'))?.total;
  const length = response.header('content-length');
  return length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined;
}

export async function pullBlob(
  transport: Transport,
  options: RegistryOptions,
  repository: string,
  digest: string,
  size: number | undefined,
  dest: string,
): Promise<{ size: number; resumedBytes: number }> {
  const path = `${dest}.partial`;
  const what = `GET blob ${digest} from ${transport.registry}/${repository}`;
  const { hash, size: had } = await hashFile(path);
  const handle = await open(path, had > 0 ? 'r+' : 'w');
  const file: PartialFile = { path, handle, hash, size: had, writing: Promise.resolve() };
  let resumedBytes = 0;
  try {
    if (size !== undefined && file.size > size) await emptyPartial(file);
    resumedBytes = await download(transport, options, repository, digest, size, file, what);
    await handle.sync();
  } catch (error) {
    if (error instanceof ImgctlError && error.code === 'INTEGRITY') await rm(path, { force: true });
    throw error;
  } finally {
    await handle.close();
  }
  const got = `sha256:${file.hash.digest('hex')}`;
  if (got !== digest) {
    await rm(path, { force: true });
    throw new ImgctlError('INTEGRITY', `${what}: the bytes received hash to ${got}`, {
      hint: "the partial download was deleted; the registry's copy may be corrupt",
    });
  }
  await rename(path, dest);
  const dir = await open(dirname(dest), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return { size: file.size, resumedBytes };
}

/**
 * GETs what the partial file lacks (Range from its size), again after a broken transfer;
 * returns the bytes each request continued from, summed.
 */
async function download(
  transport: Transport,
  options: RegistryOptions,
  repository: string,
  digest: string,
  size: number | undefined,
  file: PartialFile,
  what: string,
): Promise<number> {
  let total = size;
  let resumedBytes = 0;
  for (let stalled = 0; total === undefined || file.size < total;) {
    const from = file.size;
    const response = await getBlob(transport, repository, digest, from, from > 0 ? [416] : []);
    if (response.status === 416) {
      drain(response.res);
      // asked from the end: the partial file may hold the whole blob already
      const whole = /\/(\d+)$/.exec(response.header('content-range') ?? '')?.[1];
      if (whole !== undefined && Number(whole) === from) return resumedBytes + from;
      await emptyPartial(file);
      continue;
    }
    if (response.status === 206) resumedBytes += from;
    else if (from > 0) await emptyPartial(file);
    const answered = totalSize(response);
    if (answered !== undefined && size !== undefined && answered !== size) {
      response.res.destroy();
      throw new ImgctlError(
        'INTEGRITY',
        `${what}: the registry's blob is ${answered} bytes, the manifest says ${size}`,
      );
    }
    total = answered ?? total;
    try {
      await receive(response.res, file, total, options.onProgress, what);
      total ??= file.size;
    } catch (error) {
      if (transport.signal?.aborted) throw transport.signal.reason;
      if (error instanceof ImgctlError || !isRetryableError(error, transport.signal)) throw error;
      stalled = file.size > from ? 0 : stalled + 1;
      if (stalled >= MAX_STALLED)
        throw new ImgctlError('FAILED', `${what}: ${(error as Error).message}`, {
          cause: error,
          hint: `run again: the download resumes from ${file.path}`,
        });
      const wait = retryDelay(stalled, undefined);
      transport.log(
        `${what}: ${errorCode(error)} at byte ${file.size}; resuming in ${wait / 1000} s`,
      );
      await sleep(wait, undefined, { signal: transport.signal });
    }
  }
  return resumedBytes;
}
