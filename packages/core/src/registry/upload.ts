/**
 * Pushing a blob: skipped when the registry has it (HEAD), mounted from another repository of
 * the same registry when one is named and the registry allows it, else uploaded in chunks —
 * POST a session, PATCH each chunk, PUT `?digest=` to finish — resuming from the offset the
 * registry reports.
 *
 * Distribution 2.8 (Debian's docker-registry) shapes this: it ignores `Content-Range` on PATCH
 * (a repeated chunk is appended, answered 202), so the `Range` it answers is compared with our
 * own offset after every chunk; each `Location` carries signed state and an older one answers
 * 404, so the newest is always used (and kept in `uploadStateDir`, for a later push after a
 * kill); a PATCH cut in the middle leaves its session unusable (404 on the next request), and
 * the blob is then uploaded again from the start.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorCode, ImgctlError } from '../util/errors.ts';
import { drain, type StreamedBody } from './http.ts';
import { isRetryableError, isRetryableStatus, retryDelay } from './retry.ts';
import type { Transport } from './transport.ts';
import type { BlobSource, PushedBlob, RegistryOptions } from './types.ts';
import { setTimeout as sleep } from 'node:timers/promises';

export const DEFAULT_CHUNK_SIZE = 64 * 1024 * 1024;
/** a blob is uploaded from the start at most this many times after its session was lost */
const MAX_RESTARTS = 3;
/** recoveries (a status GET after a failed PATCH) in a row without the registry's offset moving */
const MAX_STALLED_RECOVERIES = 4;

/** The registry lost the session (404) or holds bytes we did not send there: start again. */
class SessionLost extends Error {}

interface Session {
  location: URL;
  /** bytes the registry holds */
  offset: number;
}

/** The newest Location of each unfinished upload: in memory, and in `uploadStateDir` when given. */
export interface SessionStore {
  get(repository: string, digest: string): Promise<URL | undefined>;
  set(repository: string, digest: string, location: URL): Promise<void>;
  forget(repository: string, digest: string): Promise<void>;
}

export function makeSessionStore(registry: string, dir: string | undefined): SessionStore {
  const memory = new Map<string, URL>();
  const key = (repository: string, digest: string) => `${repository}@${digest}`;
  const file = (repository: string, digest: string) =>
    join(
      dir!,
      `${createHash('sha256').update(`${registry}\n${repository}\n${digest}`).digest('hex').slice(0, 32)}.json`,
    );
  return {
    async get(repository, digest) {
      const known = memory.get(key(repository, digest));
      if (known || dir === undefined) return known;
      try {
        const saved = JSON.parse(await readFile(file(repository, digest), 'utf8')) as {
          location?: string;
        };
        return saved.location ? new URL(saved.location) : undefined;
      } catch {
        return undefined;
      }
    },
    async set(repository, digest, location) {
      memory.set(key(repository, digest), location);
      if (dir === undefined) return;
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const target = file(repository, digest);
      const tmp = `${target}.tmp`;
      const state = { registry, repository, digest, location: location.href };
      await writeFile(tmp, JSON.stringify(state), { mode: 0o600 });
      await rename(tmp, target);
    },
    async forget(repository, digest) {
      memory.delete(key(repository, digest));
      if (dir !== undefined) await rm(file(repository, digest), { force: true });
    },
  };
}

/**
 * The offset a `Range: [bytes=]0-END` header says the registry holds: END + 1. `0-0` is both
 * "nothing" and "one byte": it is one only when one byte is what we expect.
 */
export function rangeOffset(value: string | undefined, expected: number): number | undefined {
  const match = /^(?:bytes=)?0-(\d+)$/.exec(value?.trim() ?? '');
  if (!match) return undefined;
  const end = Number(match[1]);
  return end === 0 && expected !== 1 ? 0 : end + 1;
}

/**
 * `length` bytes of `source` from `start`, read from it while they are sent (the request starts
 * at once, and no chunk is held whole). A source that fails (EIO, a file gone) or ends before
 * is FAILED — a local failure, not a broken connection to retry.
 */
function chunkBody(source: BlobSource, start: number, length: number): StreamedBody {
  return {
    length,
    async *read() {
      const stream = source.open(start);
      let left = length;
      try {
        for await (const piece of stream as AsyncIterable<Buffer>) {
          const take = piece.length > left ? piece.subarray(0, left) : piece;
          left -= take.length;
          yield take;
          if (left === 0) return;
        }
      } catch (error) {
        throw new ImgctlError(
          'FAILED',
          `reading the source of ${source.digest} at byte ${start + length - left}: ${errorCode(error)}`,
          { cause: error },
        );
      } finally {
        stream.destroy();
      }
      throw new ImgctlError(
        'FAILED',
        `the source of ${source.digest} ended at byte ${start + length - left} of ${source.size}`,
      );
    },
  };
}

export interface UploadContext {
  transport: Transport;
  sessions: SessionStore;
  options: RegistryOptions;
  hasBlob(repository: string, digest: string): Promise<boolean>;
}

export async function pushBlob(
  ctx: UploadContext,
  repository: string,
  source: BlobSource,
  mountFrom: string[] = [],
): Promise<PushedBlob> {
  const { digest } = source;
  if (await ctx.hasBlob(repository, digest)) {
    await ctx.sessions.forget(repository, digest);
    return { digest, how: 'present', sentBytes: 0 };
  }
  let session = await resumeSession(ctx, repository, digest);
  // Mounts from the repositories named, in turn; the session a refused one opens serves the
  // upload when it is the last.
  for (const [i, from] of session === undefined ? mountFrom.entries() : []) {
    if (from === repository) continue;
    const mounted = await startSession(ctx, repository, digest, from);
    if (mounted === true) return { digest, how: 'mounted', sentBytes: 0 };
    if (i === mountFrom.length - 1) session = mounted;
    else await cancel(ctx, repository, mounted.location);
  }
  const counter = { sent: 0 };
  for (let restarts = 0; ; restarts++) {
    session ??= (await startSession(ctx, repository, digest)) as Session;
    try {
      await sendChunks(ctx, repository, source, session, counter);
      await finish(ctx, repository, digest, session);
      await ctx.sessions.forget(repository, digest);
      return { digest, how: 'uploaded', sentBytes: counter.sent };
    } catch (error) {
      const lost = error instanceof SessionLost;
      if (lost || (error instanceof ImgctlError && error.code === 'INTEGRITY'))
        await ctx.sessions.forget(repository, digest);
      if (!lost) throw error;
      if (restarts >= MAX_RESTARTS)
        throw new ImgctlError(
          'FAILED',
          `uploading ${digest} to ${ctx.transport.registry}/${repository}: the registry lost the upload ${restarts + 1} times (${error.message})`,
        );
      ctx.transport.log(`uploading ${short(digest)} again from the start: ${error.message}`);
      session = undefined;
    }
  }
}

function short(digest: string): string {
  return digest.slice(0, 'sha256:'.length + 12);
}

const pushScope = (repository: string) => `repository:${repository}:pull,push`;

/** The upload an earlier push left (its newest Location), asked where it stands; else undefined. */
async function resumeSession(
  ctx: UploadContext,
  repository: string,
  digest: string,
): Promise<Session | undefined> {
  const location = await ctx.sessions.get(repository, digest);
  if (location === undefined) return undefined;
  try {
    const session = await uploadStatus(ctx, repository, location, `resume upload ${short(digest)}`);
    ctx.transport.log(`resuming the upload of ${short(digest)} at byte ${session.offset}`);
    return session;
  } catch (error) {
    if (!(error instanceof SessionLost) && !(error instanceof ImgctlError)) throw error;
    if (ctx.transport.signal?.aborted) throw error;
    ctx.transport.log(
      `the upload of ${short(digest)} an earlier push left cannot go on (${error.message}): uploading it from the start`,
    );
    await ctx.sessions.forget(repository, digest);
    return undefined;
  }
}

/** GET <location>: the registry's offset and the newest Location; SessionLost on 404. */
async function uploadStatus(
  ctx: UploadContext,
  repository: string,
  location: URL,
  what: string,
): Promise<Session> {
  const response = await ctx.transport.request({
    method: 'GET',
    url: location,
    scope: pushScope(repository),
    what,
    expect: [404],
  });
  drain(response.res);
  if (response.status === 404)
    throw new SessionLost(`${what}: the registry no longer knows the session`);
  const next = response.header('location');
  const offset = rangeOffset(response.header('range'), 0) ?? 0;
  return {
    location: next ? ctx.transport.resolve(next, location, what) : location,
    offset,
  };
}

/**
 * POST an upload: its session (202). With `mountFrom`, a cross-repository mount: true when the
 * registry mounted the blob (201), else the session it opened instead.
 */
async function startSession(
  ctx: UploadContext,
  repository: string,
  digest: string,
  mountFrom?: string,
): Promise<Session | true> {
  const what = mountFrom
    ? `mount ${short(digest)} from ${mountFrom}`
    : `POST blob upload ${short(digest)}`;
  const query = mountFrom ? `?${new URLSearchParams({ mount: digest, from: mountFrom })}` : '';
  const response = await ctx.transport.request({
    method: 'POST',
    url: `/v2/${repository}/blobs/uploads/${query}`,
    scope: pushScope(repository),
    extraScopes: mountFrom ? [`repository:${mountFrom}:pull`] : [],
    what,
  });
  drain(response.res);
  if (response.status === 201 && mountFrom) return true;
  const location = response.header('location');
  if (response.status !== 202 || location === undefined)
    throw new ImgctlError(
      'FAILED',
      `${what}: ${ctx.transport.registry} answered ${response.status}${location ? '' : ' without a Location'}, not 202 with an upload session`,
    );
  const session = { location: ctx.transport.resolve(location, response.url, what), offset: 0 };
  await ctx.sessions.set(repository, digest, session.location);
  return session;
}

/** DELETE an upload session we will not use; its failure changes nothing. */
async function cancel(ctx: UploadContext, repository: string, location: URL): Promise<void> {
  try {
    const response = await ctx.transport.request({
      method: 'DELETE',
      url: location,
      scope: pushScope(repository),
      what: 'cancel upload',
      retry: false,
      expect: [404],
    });
    drain(response.res);
  } catch (error) {
    if (ctx.transport.signal?.aborted) throw error;
  }
}

/**
 * PATCHes the source from the session's offset to its end, counting the bytes sent. A failed
 * PATCH (a broken connection, 416, 429, 5xx) is followed by a status GET and the upload goes on
 * from the registry's offset.
 */
async function sendChunks(
  ctx: UploadContext,
  repository: string,
  source: BlobSource,
  session: Session,
  counter: { sent: number },
): Promise<void> {
  const { transport, options } = ctx;
  const chunkSize = Math.max(1, options.chunkSize ?? DEFAULT_CHUNK_SIZE);
  const what = `PATCH blob ${short(source.digest)}`;
  let stalled = 0;
  options.onProgress?.(session.offset, source.size);
  while (session.offset < source.size) {
    if (options.windDown?.aborted)
      throw new ImgctlError(
        'FAILED',
        `interrupted: ${session.offset} of ${source.size} bytes of ${source.digest} are in ${transport.registry}/${repository}`,
        {
          hint: options.uploadStateDir
            ? 'run the same push again: it resumes from there'
            : undefined,
        },
      );
    const start = session.offset;
    const length = Math.min(chunkSize, source.size - start);
    const expected = start + length;
    let failure: string;
    let wait = 0;
    try {
      const response = await transport.request({
        method: 'PATCH',
        url: session.location,
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${start}-${expected - 1}`,
        },
        body: chunkBody(source, start, length),
        scope: pushScope(repository),
        what,
        retry: false,
        expect: [404, 416, 429, 500, 502, 503, 504],
      });
      drain(response.res);
      const next = response.header('location');
      if (next) session.location = transport.resolve(next, session.location, what);
      if (response.status === 404)
        throw new SessionLost(`${what}: the registry no longer knows the session`);
      if (response.status === 202) {
        counter.sent += length;
        await ctx.sessions.set(repository, source.digest, session.location);
        const held = rangeOffset(response.header('range'), expected) ?? expected;
        if (held === expected) {
          session.offset = expected;
          stalled = 0;
          options.onProgress?.(session.offset, source.size);
          continue;
        }
        if (held > expected) {
          await cancel(ctx, repository, session.location);
          throw new SessionLost(
            `after bytes ${start}-${expected - 1} the registry holds ${held} bytes, more than were sent: a chunk was stored twice`,
          );
        }
        transport.log(
          `${what}: the registry holds ${held} bytes after bytes ${start}-${expected - 1}; going on from ${held}`,
        );
        session.offset = held;
        continue;
      }
      failure = String(response.status);
      if (isRetryableStatus(response.status))
        wait = retryDelay(stalled, response.header('retry-after'));
    } catch (error) {
      if (error instanceof SessionLost || !isRetryableError(error, transport.signal)) throw error;
      failure = errorCode(error);
      wait = retryDelay(stalled, undefined);
    }
    // Where does the upload stand? Go on from there.
    if (++stalled > MAX_STALLED_RECOVERIES)
      throw new ImgctlError(
        'FAILED',
        `${what} to ${transport.registry}/${repository}: ${failure}, ${stalled} times at byte ${start}`,
        { hint: 'run the push again: it resumes from what the registry holds' },
      );
    transport.log(
      `${what} bytes ${start}-${expected - 1}: ${failure}; asking the registry where the upload stands${wait ? ` in ${wait / 1000} s` : ''}`,
    );
    if (wait) await backOff(wait, transport.signal, options.windDown);
    const status = await uploadStatus(
      ctx,
      repository,
      session.location,
      `status of upload ${short(source.digest)}`,
    );
    session.location = status.location;
    await ctx.sessions.set(repository, source.digest, session.location);
    if (status.offset > start) stalled = 0;
    session.offset = status.offset;
    options.onProgress?.(session.offset, source.size);
  }
}

/**
 * Waits `wait` ms before asking where an upload stands; Ctrl-C (`windDown`) cuts the wait short,
 * so the push stops at once at the offset the registry then gives.
 */
async function backOff(
  wait: number,
  signal: AbortSignal | undefined,
  windDown: AbortSignal | undefined,
): Promise<void> {
  const either = [signal, windDown].filter((s) => s !== undefined);
  try {
    await sleep(wait, undefined, { signal: AbortSignal.any(either) });
  } catch (error) {
    if (signal?.aborted || !windDown?.aborted) throw error;
  }
}

/** PUT <location>?digest=: the upload becomes the blob. */
async function finish(
  ctx: UploadContext,
  repository: string,
  digest: string,
  session: Session,
): Promise<void> {
  const what = `PUT blob ${short(digest)}`;
  const url = new URL(session.location);
  url.searchParams.append('digest', digest);
  const response = await ctx.transport.request({
    method: 'PUT',
    url,
    headers: { 'content-type': 'application/octet-stream' },
    body: Buffer.alloc(0),
    scope: pushScope(repository),
    what,
    expect: [404],
  });
  drain(response.res);
  if (response.status === 404) {
    // a retried PUT whose first attempt did finish the upload
    if (await ctx.hasBlob(repository, digest)) return;
    throw new SessionLost(`${what}: the registry no longer knows the session`);
  }
  const said = response.header('docker-content-digest');
  if (said !== undefined && said !== digest)
    throw new ImgctlError(
      'INTEGRITY',
      `${what}: ${ctx.transport.registry} stored the upload as ${said}, not ${digest}`,
    );
}
