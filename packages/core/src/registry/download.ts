/**
 * Getting a blob: a Range GET (the registry may redirect it to its storage elsewhere), and
 * pulling one to a file — `<dest>.partial` resumed with Range, hashed as it is written, fsynced
 * and renamed to `<dest>` once its sha256 is the digest's.
 */
import { createHash } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImgctlError } from '../util/errors.ts';
import { hashFile } from '../util/hash-file.ts';
import { drain } from './http.ts';
import { isRetryableError, retryDelay, type Response, type Transport } from './transport.ts';
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
  const partial = `${dest}.partial`;
  const what = `GET blob ${digest} from ${transport.registry}/${repository}`;
  let { hash, size: have } = await hashFile(partial);
  let total = size;
  let resumedBytes = 0;
  const handle = await open(partial, have > 0 ? 'r+' : 'w');
  const restart = async () => {
    await handle.truncate(0);
    hash = createHash('sha256');
    have = 0;
  };
  try {
    if (size !== undefined && have > size) await restart();
    for (let stalled = 0; total === undefined || have < total;) {
      const from = have;
      const response = await getBlob(transport, repository, digest, from, from > 0 ? [416] : []);
      if (response.status === 416) {
        drain(response.res);
        // asked from the end: the partial file may hold the whole blob already
        const whole = /\/(\d+)$/.exec(response.header('content-range') ?? '')?.[1];
        if (whole !== undefined && Number(whole) === from) {
          total = from;
          resumedBytes += from;
          break;
        }
        await restart();
        continue;
      }
      if (response.status === 206) resumedBytes += from;
      else if (from > 0) await restart();
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
        // TLS hands on 16 KiB records: written in pieces of WRITE_CHUNK, hashed as they go
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        const flush = async () => {
          const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
          pending = [];
          pendingBytes = 0;
          for (let done = 0; done < data.length;) {
            const { bytesWritten } = await handle.write(
              data,
              done,
              data.length - done,
              have + done,
            );
            done += bytesWritten;
          }
          hash.update(data);
          have += data.length;
          options.onProgress?.(have, total ?? have);
        };
        for await (const chunk of response.res) {
          const data = chunk as Buffer;
          if (total !== undefined && have + pendingBytes + data.length > total)
            throw new ImgctlError(
              'INTEGRITY',
              `${what}: the registry sent more than ${total} bytes`,
            );
          pending.push(data);
          pendingBytes += data.length;
          if (pendingBytes >= WRITE_CHUNK) await flush();
        }
        if (pendingBytes > 0) await flush();
        total ??= have;
        if (have < total) throw new Error(`the body ended at byte ${have} of ${total}`);
      } catch (error) {
        if (error instanceof ImgctlError || !isRetryableError(error, transport.signal)) throw error;
        stalled = have > from ? 0 : stalled + 1;
        if (stalled >= MAX_STALLED)
          throw new ImgctlError('FAILED', `${what}: ${(error as Error).message}`, {
            cause: error,
            hint: `run again: the download resumes from ${partial}`,
          });
        const wait = retryDelay(stalled, undefined);
        transport.log(
          `${what}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message} at byte ${have}; resuming in ${wait / 1000} s`,
        );
        await sleep(wait, undefined, { signal: transport.signal });
      }
    }
    await handle.sync();
  } catch (error) {
    if (error instanceof ImgctlError && error.code === 'INTEGRITY')
      await rm(partial, { force: true });
    throw error;
  } finally {
    await handle.close();
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== digest) {
    await rm(partial, { force: true });
    throw new ImgctlError('INTEGRITY', `${what}: the bytes received hash to ${got}`, {
      hint: "the partial download was deleted; the registry's copy may be corrupt",
    });
  }
  await rename(partial, dest);
  const dir = await open(dirname(dest), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return { size: have, resumedBytes };
}
