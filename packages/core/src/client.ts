/**
 * The client of `imgctl serve` (docs/server.md), used by the agent and the tests: JSON calls
 * through ky with retries on connection errors and 5xx, plan signature checks, and resumable,
 * verified blob downloads.
 */
import { createHash, type Hash, type KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import ky, { HTTPError, type KyInstance, TimeoutError } from 'ky';
import { syncDirectory } from './document.ts';
import { type ErrorCode, EXIT, ImgctlError, isImgctlError } from './errors.ts';
import type { ProvisionEvent, SystemStatus } from './events.ts';
import type { ImageDetails, ImageSummary } from './images.ts';
import { isValidName } from './names.ts';
import {
  type PlanSignature,
  parsePublicKey,
  parseSignatureHeader,
  SIGNATURE_HEADER,
  verifyPlan,
} from './signing.ts';
import { SHA256_HEX } from './store.ts';
import type { SystemSummary } from './systems.ts';
import type { ImageRecordDoc, PlanDoc, SystemDoc } from './types.ts';

export interface ClientOptions {
  /** e.g. http://server:8460 */
  baseUrl: string;
  /** bearer token (the read token, or the write token, which also reads) */
  token?: string;
  /** public key (PEM or KeyObject): plans must be signed by it, else INTEGRITY */
  trustKey?: string | Buffer | KeyObject;
  fetch?: typeof fetch;
  /** retries after a connection error or 5xx (default 5); a download resets them on progress */
  retries?: number;
  /** first retry delay, doubled each time up to maxRetryDelayMs (default 250 / 5000) */
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** per JSON call, ms (default 30 s) */
  timeoutMs?: number;
}

export interface PlanQuery {
  image?: string;
  record?: string;
  /** a system name, MAC address or hostname */
  system?: string;
  vmName?: string;
  /** NAME=VALUE */
  sets?: string[];
}

export interface FetchedPlan {
  plan: PlanDoc;
  /** present when the server signs plans; verified when the client has a trustKey */
  signature?: PlanSignature;
}

export interface DownloadProgress {
  /** bytes in the file so far (resumed bytes included) */
  bytes: number;
  /** the blob's size, once the server said */
  total?: number;
}

export interface DownloadOptions {
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
  /** abort and resume when no data arrives for this long (default 30 s) */
  stallTimeoutMs?: number;
}

export interface DownloadResult {
  path: string;
  size: number;
  sha256: string;
  /** bytes that were already in `<dest>.partial` when the download (re)started, summed */
  resumedBytes: number;
  /** HTTP requests made */
  requests: number;
}

export interface Client {
  baseUrl: string;
  serverInfo(): Promise<{ store: string; signing: { key_id: string; public_key: string } | null }>;
  getPlan(query: PlanQuery): Promise<FetchedPlan>;
  listImages(): Promise<ImageSummary[]>;
  getImage(name: string): Promise<ImageDetails>;
  getRecord(image: string, record: string): Promise<ImageRecordDoc>;
  listSystems(): Promise<SystemSummary[]>;
  /** by name, MAC address or hostname */
  findSystem(key: string): Promise<SystemDoc>;
  /** provision.sh, custom_scripts/SET/FILE, common/FILE, or kickstart (rendered) */
  getFile(image: string, path: string, query?: PlanQuery): Promise<string>;
  postEvent(event: Omit<ProvisionEvent, 'time'>): Promise<ProvisionEvent>;
  getStatus(options?: { system?: string; stalledAfter?: string }): Promise<SystemStatus[]>;
  /** downloads a blob to `destFile`, resuming `destFile.partial`; renamed only once verified */
  downloadBlob(hex: string, destFile: string, options?: DownloadOptions): Promise<DownloadResult>;
}

const RETRY_STATUS = [408, 429, 500, 502, 503, 504];
const WRITE_CHUNK = 4 * 1024 * 1024;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

export function createClient(options: ClientOptions): Client {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  const doFetch = options.fetch ?? globalThis.fetch;
  const retries = options.retries ?? 5;
  const firstDelay = options.retryDelayMs ?? 250;
  const maxDelay = options.maxRetryDelayMs ?? 5000;
  const backoff = (attempt: number) => Math.min(maxDelay, firstDelay * 2 ** (attempt - 1));
  const trustKey =
    options.trustKey === undefined
      ? undefined
      : parsePublicKey(options.trustKey, 'the trusted key');
  const auth: Record<string, string> = options.token
    ? { authorization: `Bearer ${options.token}` }
    : {};
  const api: KyInstance = ky.create({
    prefixUrl: `${baseUrl}/v1`,
    headers: auth,
    fetch: doFetch,
    timeout: options.timeoutMs ?? 30_000,
    retry: {
      limit: retries,
      methods: ['get', 'head', 'post'],
      statusCodes: RETRY_STATUS,
      delay: backoff,
      retryOnTimeout: true,
    },
    throwHttpErrors: true,
  });

  async function call<T>(fn: () => Promise<T>, what: string): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw await toImgctlError(error, what, baseUrl);
    }
  }

  const getJson = <T>(path: string, searchParams?: URLSearchParams) =>
    call(() => api.get(path, { searchParams }).json<T>(), `GET /v1/${path}`);

  const client: Client = {
    baseUrl,
    serverInfo: () =>
      call(
        () => ky.get(`${baseUrl}/v1`, { headers: auth, fetch: doFetch, retry: 0 }).json(),
        'GET /v1',
      ),
    async getPlan(query) {
      const response = await call(
        () => api.get('plan', { searchParams: planParams(query) }),
        'GET /v1/plan',
      );
      const plan = (await response.json()) as PlanDoc;
      const header = response.headers.get(SIGNATURE_HEADER);
      const signature = header === null ? undefined : parseSignatureHeader(header);
      if (trustKey) {
        if (!signature) {
          throw new ImgctlError('INTEGRITY', `the server at ${baseUrl} sent an unsigned plan`, {
            hint: "the store needs a signing key ('imgctl keygen' on the server)",
          });
        }
        verifyPlan(plan, signature, trustKey);
      }
      return { plan, signature };
    },
    listImages: () => getJson('images'),
    getImage: (name) => getJson(`images/${encodeURIComponent(name)}`),
    getRecord: (image, record) =>
      getJson(`images/${encodeURIComponent(image)}/records/${encodeURIComponent(record)}`),
    listSystems: () => getJson('systems'),
    async findSystem(key) {
      if (MAC.test(key)) return getJson('systems', new URLSearchParams({ mac: key }));
      if (isValidName(key)) {
        try {
          return await getJson(`systems/${encodeURIComponent(key)}`);
        } catch (error) {
          if (!(isImgctlError(error) && error.code === 'NOT_FOUND')) throw error;
        }
      }
      return getJson('systems', new URLSearchParams({ hostname: key }));
    },
    getFile(image, path, query = {}) {
      const params = planParams(query);
      params.delete('image');
      const encoded = path.split('/').map(encodeURIComponent).join('/');
      return call(
        () =>
          api
            .get(`images/${encodeURIComponent(image)}/files/${encoded}`, { searchParams: params })
            .text(),
        `GET file ${path} of ${image}`,
      );
    },
    async postEvent(event) {
      const reply = await call(
        () => api.post('events', { json: event }).json<{ event: ProvisionEvent }>(),
        'POST /v1/events',
      );
      return reply.event;
    },
    getStatus(opts = {}) {
      const params = new URLSearchParams();
      if (opts.system) params.set('system', opts.system);
      if (opts.stalledAfter) params.set('stalled_after', opts.stalledAfter);
      return getJson('status', params);
    },
    downloadBlob: (hex, destFile, opts = {}) =>
      downloadBlob({ baseUrl, auth, doFetch, retries, backoff }, hex, destFile, opts),
  };
  return client;
}

function planParams(query: PlanQuery): URLSearchParams {
  const params = new URLSearchParams();
  if (query.image !== undefined) params.set('image', query.image);
  if (query.record !== undefined) params.set('record', query.record);
  if (query.system !== undefined) params.set('system', query.system);
  if (query.vmName !== undefined) params.set('vm_name', query.vmName);
  for (const s of query.sets ?? []) params.append('set', s);
  return params;
}

/** The server's JSON error as an ImgctlError; connection trouble as FAILED. */
async function toImgctlError(error: unknown, what: string, baseUrl: string): Promise<unknown> {
  if (isImgctlError(error)) return error;
  if (error instanceof HTTPError) return errorFromResponse(error.response, what);
  if (error instanceof TimeoutError)
    return new ImgctlError('FAILED', `${what}: the server at ${baseUrl} did not answer in time`, {
      cause: error,
    });
  if (error instanceof TypeError || (error as Error)?.name === 'TypeError') {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return new ImgctlError(
      'FAILED',
      `${what}: cannot reach the server at ${baseUrl} (${cause?.code ?? cause?.message ?? (error as Error).message})`,
      { cause: error, hint: 'check the --server URL and that imgctl serve is running' },
    );
  }
  return error;
}

async function errorFromResponse(response: Response, what: string): Promise<ImgctlError> {
  let body: { error?: { code?: string; message?: string; hint?: string | null } } = {};
  try {
    body = (await response.json()) as typeof body;
  } catch {
    // not a JSON error: described by the status alone
  }
  const e = body.error;
  const code: ErrorCode =
    e?.code && Object.hasOwn(EXIT, e.code) && e.code !== 'OK'
      ? (e.code as ErrorCode)
      : response.status === 404
        ? 'NOT_FOUND'
        : response.status >= 500
          ? 'FAILED'
          : 'USAGE';
  return new ImgctlError(code, `${what}: ${e?.message ?? `HTTP ${response.status}`}`, {
    hint: e?.hint ?? undefined,
  });
}

interface Transport {
  baseUrl: string;
  auth: Record<string, string>;
  doFetch: typeof fetch;
  retries: number;
  backoff: (attempt: number) => number;
}

/** A failure worth another request: the connection, a stall, a cut body, a 5xx. */
class Retryable extends Error {}

async function downloadBlob(
  t: Transport,
  hex: string,
  destFile: string,
  opts: DownloadOptions,
): Promise<DownloadResult> {
  if (!SHA256_HEX.test(hex)) throw new ImgctlError('USAGE', `invalid sha256 '${hex.slice(0, 80)}'`);
  const partial = `${destFile}.partial`;
  const stallMs = opts.stallTimeoutMs ?? 30_000;
  const url = `${t.baseUrl}/v1/blobs/sha256/${hex}`;
  let failures = 0;
  let requests = 0;
  let resumedBytes = 0;
  let state: { hash: Hash; size: number } | undefined;

  for (;;) {
    opts.signal?.throwIfAborted();
    // The hash covers exactly the bytes in the partial file: rehashed from disk when not known.
    state ??= await hashFile(partial);
    if (state.size > 0) resumedBytes += state.size;
    const before = state.size;
    requests++;
    try {
      const outcome = await fetchInto(t, url, hex, partial, state, stallMs, opts);
      if (outcome === 'restart') {
        state = undefined;
        continue;
      }
      const digest = state.hash.copy().digest('hex');
      if (digest !== hex) {
        await rm(partial, { force: true });
        throw new ImgctlError(
          'INTEGRITY',
          `blob sha256:${hex} from ${t.baseUrl} does not match its hash (got ${digest})`,
          {
            hint: "the partial download was deleted; the server's copy may be corrupt (imgctl verify on the server)",
          },
        );
      }
      await rename(partial, destFile);
      await syncDirectory(dirname(destFile));
      return { path: destFile, size: state.size, sha256: hex, resumedBytes, requests };
    } catch (error) {
      if (!(error instanceof Retryable)) throw error;
      if (opts.signal?.aborted) throw opts.signal.reason;
      // Progress resets the count: a flaky link that keeps moving is not given up on.
      failures = state !== undefined && state.size > before ? 1 : failures + 1;
      if (state !== undefined && state.size < 0) state = undefined;
      if (failures > t.retries) {
        throw new ImgctlError(
          'FAILED',
          `downloading blob sha256:${hex} from ${t.baseUrl} failed ${failures} times: ${error.message}`,
          { hint: `run again: the download resumes from ${partial}` },
        );
      }
      await sleep(t.backoff(failures), undefined, { signal: opts.signal });
    }
  }
}

async function hashFile(path: string): Promise<{ hash: Hash; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    await stat(path);
  } catch {
    return { hash, size };
  }
  for await (const chunk of createReadStream(path, { highWaterMark: WRITE_CHUNK })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { hash, size };
}

/**
 * One request: appends what arrives to `partial` and to the hash. Resolves 'complete' when the
 * file holds the whole blob, 'restart' when the partial file had to be discarded; throws
 * Retryable for what another request may fix and ImgctlError for what it will not.
 */
async function fetchInto(
  t: Transport,
  url: string,
  hex: string,
  partial: string,
  state: { hash: Hash; size: number },
  stallMs: number,
  opts: DownloadOptions,
): Promise<'complete' | 'restart'> {
  const controller = new AbortController();
  const onAbort = () => controller.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let stallTimer: NodeJS.Timeout | undefined;
  const armStall = () => {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(
      () => controller.abort(new Retryable(`no data for ${stallMs} ms`)),
      stallMs,
    );
  };
  const headers: Record<string, string> = { ...t.auth };
  if (state.size > 0) {
    headers.range = `bytes=${state.size}-`;
    headers['if-range'] = `"${hex}"`;
  }
  let handle: FileHandle | undefined;
  let pending: Promise<unknown> = Promise.resolve();
  let written = true;
  try {
    armStall();
    let response: Response;
    try {
      response = await t.doFetch(url, { headers, signal: controller.signal });
    } catch (error) {
      throw asRetryable(error, controller);
    }
    if (response.status === 416) {
      await response.body?.cancel();
      const total = Number(/\/(\d+)$/.exec(response.headers.get('content-range') ?? '')?.[1]);
      if (total === state.size) return 'complete';
      await rm(partial, { force: true });
      return 'restart';
    }
    if (response.status >= 500 || response.status === 408 || response.status === 429) {
      await response.body?.cancel();
      throw new Retryable(`HTTP ${response.status}`);
    }
    if (response.status !== 200 && response.status !== 206) {
      throw await errorFromResponse(response, `GET blob sha256:${hex}`);
    }
    let total: number;
    if (response.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== state.size) {
        await response.body?.cancel();
        await rm(partial, { force: true });
        return 'restart';
      }
      total = Number(m[3]);
      handle = await open(partial, 'a');
    } else {
      // The whole blob: whatever the partial file held is replaced.
      total = Number(response.headers.get('content-length') ?? NaN);
      handle = await open(partial, 'w');
      state.hash = createHash('sha256');
      state.size = 0;
    }
    opts.onProgress?.({ bytes: state.size, total });
    const file = handle;
    const buffered: Buffer[] = [];
    let bufferedBytes = 0;
    // At most one write in flight while the next chunks arrive; the hash is updated with what
    // is handed to write(), so it always describes the file once the write lands.
    const flush = async () => {
      if (bufferedBytes === 0) return;
      const data = buffered.length === 1 ? buffered[0]! : Buffer.concat(buffered, bufferedBytes);
      buffered.length = 0;
      bufferedBytes = 0;
      await pending;
      state.hash.update(data);
      state.size += data.length;
      written = false;
      pending = writeAll(file, data).then(() => {
        written = true;
      });
    };
    const reader = response.body!.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        armStall();
        buffered.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
        bufferedBytes += value.byteLength;
        if (bufferedBytes >= WRITE_CHUNK) await flush();
        opts.onProgress?.({ bytes: state.size + bufferedBytes, total });
      }
    } catch (error) {
      await flush();
      throw asRetryable(error, controller);
    }
    await flush();
    await pending;
    await file.sync();
    if (state.size !== total)
      throw new Retryable(`the body ended at ${state.size} of ${total} bytes`);
    return 'complete';
  } catch (error) {
    // A failed write leaves the file shorter than the hash: forget the state, rehash from disk.
    await pending.catch(() => undefined);
    if (!written) state.size = -1;
    throw error;
  } finally {
    clearTimeout(stallTimer);
    opts.signal?.removeEventListener('abort', onAbort);
    await handle?.close();
  }
}

async function writeAll(file: FileHandle, data: Buffer): Promise<void> {
  for (let off = 0; off < data.length;) {
    const { bytesWritten } = await file.write(data, off, data.length - off);
    off += bytesWritten;
  }
}

function asRetryable(error: unknown, controller: AbortController): unknown {
  const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
  if (reason instanceof Retryable) return reason;
  if (controller.signal.aborted) return reason ?? error;
  if (isImgctlError(error)) return error;
  const cause = (error as { cause?: { code?: string; message?: string } })?.cause;
  return new Retryable(cause?.code ?? cause?.message ?? (error as Error)?.message ?? String(error));
}
