/**
 * The client of `imgctl serve` (docs/server.md), used by the agent and the tests: JSON calls
 * through ky with retries on connection errors and 5xx, plan signature checks, and resumable,
 * verified blob downloads.
 */
import { createHash, type Hash, type KeyObject } from 'node:crypto';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import ky, { HTTPError, type KyInstance, TimeoutError } from 'ky';
import { syncDirectory } from '../yaml/document.ts';
import { type ErrorCode, EXIT, ImgctlError, isImgctlError } from '../util/errors.ts';
import { hashFile } from '../util/hash-file.ts';
import type { ProvisionEvent, SystemStatus } from '../server/events.ts';
import { httpGet, type RawResponse } from './http-get.ts';
import type { ImageDetails, ImageSummary } from '../store/images.ts';
import { isValidName } from '../util/names.ts';
import {
  type PlanSignature,
  parsePublicKey,
  parseSignatureHeader,
  SIGNATURE_HEADER,
  verifyPlan,
} from '../plan/signing.ts';
import { SHA256_HEX } from '../store/store.ts';
import type { SystemSummary } from '../store/systems.ts';
import type { ImageRecordDoc, PlanDoc, SystemDoc } from '../store/types.ts';

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

/** Where streamBlob puts a blob's bytes: in order, from offset 0. */
export interface BlobSink {
  /**
   * `data` belongs at `offset` of the blob. Offsets grow; after a failed request the next one
   * resumes at the end of the last write that resolved, and when the server cannot resume, at 0.
   * `data` is reused once the promise resolves: copy what must outlive the call.
   */
  write(data: Buffer, offset: number): Promise<void>;
}

export interface StreamResult {
  size: number;
  sha256: string;
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
  /**
   * streams a blob into `sink`, hashed on arrival; resolves once all of it was written and its
   * sha256 matches, else INTEGRITY (after the writes: the sink then holds bad data)
   */
  streamBlob(hex: string, sink: BlobSink, options?: DownloadOptions): Promise<StreamResult>;
  /** the provisioning ramdisk the server network-boots (GET /v1/boot/ramdisk) */
  getRamdisk(): Promise<RamdiskInfo>;
  /** a one-time token for one system's provisioning (POST /v1/boot/tokens; write token) */
  issueBootToken(system: string): Promise<{ token: string; expires: string }>;
}

/** What GET /v1/boot/ramdisk answers: the ramdisk's files (blobs) and its kernel arguments. */
export interface RamdiskInfo {
  kernel: { sha256: string; size: number };
  initrd: { sha256: string; size: number };
  cmdline: string;
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

  const transport: Transport = { baseUrl, auth, retries, backoff };
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
    getRamdisk: () => getJson('boot/ramdisk'),
    issueBootToken: (system) =>
      call(
        () =>
          api.post('boot/tokens', { json: { system } }).json<{ token: string; expires: string }>(),
        'POST /v1/boot/tokens',
      ),
    downloadBlob: (hex, destFile, opts = {}) => downloadBlob(transport, hex, destFile, opts),
    streamBlob: (hex, sink, opts = {}) => streamBlob(transport, hex, sink, opts),
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
  retries: number;
  backoff: (attempt: number) => number;
}

/** A failure worth another request: the connection, a stall, a cut body, a 5xx. */
class Retryable extends Error {}

/** The bytes a transfer has handed to its sink, and their hash. */
interface TransferState {
  hash: Hash;
  size: number;
}

async function downloadBlob(
  t: Transport,
  hex: string,
  destFile: string,
  opts: DownloadOptions,
): Promise<DownloadResult> {
  const partial = `${destFile}.partial`;
  // The hash covers exactly the bytes in the partial file: rehashed from disk on (re)start.
  const state = await hashFile(partial);
  let resumedBytes = state.size;
  const handle = await open(partial, state.size > 0 ? 'r+' : 'w');
  let requests: number;
  try {
    requests = await transfer(t, hex, fileSink(handle), state, opts, {
      onRestart: () => handle.truncate(0),
      onResume: (bytes) => (resumedBytes += bytes),
      hint: `run again: the download resumes from ${partial}`,
    });
    await handle.sync();
  } finally {
    await handle.close();
  }
  await checkDigest(t, hex, state, () => rm(partial, { force: true }));
  await rename(partial, destFile);
  await syncDirectory(dirname(destFile));
  return { path: destFile, size: state.size, sha256: hex, resumedBytes, requests };
}

async function streamBlob(
  t: Transport,
  hex: string,
  sink: BlobSink,
  opts: DownloadOptions,
): Promise<StreamResult> {
  const state: TransferState = { hash: createHash('sha256'), size: 0 };
  const requests = await transfer(t, hex, sink, state, opts, {
    hint: 'run again: the blob is streamed again from the start',
  });
  await checkDigest(t, hex, state);
  return { size: state.size, sha256: hex, requests };
}

async function checkDigest(
  t: Transport,
  hex: string,
  state: TransferState,
  discard?: () => Promise<void>,
): Promise<void> {
  const digest = state.hash.digest('hex');
  if (digest === hex) return;
  await discard?.();
  throw new ImgctlError(
    'INTEGRITY',
    `blob sha256:${hex} from ${t.baseUrl} does not match its hash (got ${digest})`,
    {
      hint: `${discard ? 'the partial download was deleted; ' : ''}the server's copy may be corrupt (imgctl verify on the server)`,
    },
  );
}

function fileSink(handle: FileHandle): BlobSink {
  return {
    async write(data, offset) {
      for (let done = 0; done < data.length;) {
        const { bytesWritten } = await handle.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    },
  };
}

interface TransferHooks {
  /** the server will not continue from `state.size`: what the sink holds is to be dropped */
  onRestart?: () => Promise<void>;
  /** a request continues after `bytes` already in the sink */
  onResume?: (bytes: number) => void;
  /** the hint when the retries are spent */
  hint: string;
}

/**
 * Requests the blob until the sink holds all of it from `state.size` on, resuming with Range
 * after each retryable failure; gives up after `t.retries` failures in a row without progress.
 * Returns the number of requests; the caller checks the digest.
 */
async function transfer(
  t: Transport,
  hex: string,
  sink: BlobSink,
  state: TransferState,
  opts: DownloadOptions,
  hooks: TransferHooks,
): Promise<number> {
  if (!SHA256_HEX.test(hex)) throw new ImgctlError('USAGE', `invalid sha256 '${hex.slice(0, 80)}'`);
  const url = new URL(`${t.baseUrl}/v1/blobs/sha256/${hex}`);
  const stallMs = opts.stallTimeoutMs ?? 30_000;
  let failures = 0;
  let requests = 0;
  for (;;) {
    opts.signal?.throwIfAborted();
    const before = state.size;
    if (before > 0 && requests > 0) hooks.onResume?.(before);
    requests++;
    try {
      const outcome = await requestOnce(t, url, hex, sink, state, stallMs, opts);
      if (outcome === 'complete') return requests;
      await hooks.onRestart?.();
      state.hash = createHash('sha256');
      state.size = 0;
    } catch (error) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (!(error instanceof Retryable)) throw error;
      // Progress resets the count: a flaky link that keeps moving is not given up on.
      failures = state.size > before ? 1 : failures + 1;
      if (failures > t.retries) {
        throw new ImgctlError(
          'FAILED',
          `downloading blob sha256:${hex} from ${t.baseUrl} failed ${failures} times: ${error.message}`,
          { hint: hooks.hint },
        );
      }
      await sleep(t.backoff(failures), undefined, { signal: opts.signal });
    }
  }
}

/**
 * One request: hands what arrives to the sink (and the hash) from `state.size` on. Resolves
 * 'complete' when the sink holds the whole blob, 'restart' when it must start over from 0;
 * throws Retryable for what another request may fix and ImgctlError for what it will not.
 */
async function requestOnce(
  t: Transport,
  url: URL,
  hex: string,
  sink: BlobSink,
  state: TransferState,
  stallMs: number,
  opts: DownloadOptions,
): Promise<'complete' | 'restart'> {
  const headers: Record<string, string> = { 'user-agent': 'imgctl', ...t.auth };
  if (state.size > 0) {
    headers.range = `bytes=${state.size}-`;
    headers['if-range'] = `"${hex}"`;
  }
  let response: RawResponse;
  try {
    response = await httpGet(url, headers, { signal: opts.signal, stallMs });
  } catch (error) {
    throw retryable(error, opts);
  }
  const { status } = response;
  if (status === 416) {
    response.close();
    const total = Number(/\/(\d+)$/.exec(response.headers['content-range'] ?? '')?.[1]);
    return total === state.size ? 'complete' : 'restart';
  }
  if (status >= 500 || status === 408 || status === 429) {
    response.close();
    throw new Retryable(`HTTP ${status}`);
  }
  if (status !== 200 && status !== 206) {
    const body = await response.text();
    throw await errorFromResponse(
      new Response(body, { status, headers: response.headers }),
      `GET blob sha256:${hex}`,
    );
  }
  let total: number | undefined;
  if (status === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.headers['content-range'] ?? '');
    if (!m || Number(m[1]) !== state.size) {
      response.close();
      return 'restart';
    }
    total = Number(m[3]);
  } else {
    if (state.size > 0) {
      // The whole blob, not the rest: what the sink held is replaced.
      response.close();
      return 'restart';
    }
    // A chunked body (a proxy re-framed it) marks its end itself: its size is known once read.
    total =
      response.framing === 'chunked'
        ? undefined
        : Number(response.headers['content-length'] ?? NaN);
  }
  if (total !== undefined && !Number.isSafeInteger(total)) {
    response.close();
    throw new ImgctlError('FAILED', `GET blob sha256:${hex}: the server sent no length`);
  }
  opts.onProgress?.({ bytes: state.size, total });
  const writer = batchWriter(sink, state, (bytes) => opts.onProgress?.({ bytes, total }));
  try {
    await response.read(writer.push);
  } catch (error) {
    await writer.flush();
    throw retryable(error, opts);
  }
  await writer.flush();
  if (total !== undefined && state.size !== total)
    throw new Retryable(`the body ended at ${state.size} of ${total} bytes`);
  return 'complete';
}

/**
 * Gathers arriving chunks into WRITE_CHUNK batches; each batch is hashed and counted in `state`
 * as it is handed to the sink, and written while the next one fills. Writes run one at a time,
 * in order; reading pauses while two are queued. A failed write leaves the sink's content
 * unknown: `state.size` becomes -1 and the error is thrown.
 */
function batchWriter(
  sink: BlobSink,
  state: TransferState,
  onProgress: (bytes: number) => void,
): { push: (chunk: Buffer) => Promise<void> | undefined; flush: () => Promise<void> } {
  const spares: Buffer[] = [];
  let filling: Buffer = Buffer.allocUnsafe(WRITE_CHUNK);
  let used = 0;
  let queued = 0;
  let last: Promise<void> = Promise.resolve();
  let beforeLast: Promise<void> = last;

  const startWrite = () => {
    if (used === 0) return;
    const data = filling.subarray(0, used);
    const buffer = filling;
    const offset = state.size;
    state.hash.update(data);
    state.size += used;
    filling = spares.pop() ?? Buffer.allocUnsafe(WRITE_CHUNK);
    used = 0;
    queued++;
    beforeLast = last;
    last = last
      .then(() => sink.write(data, offset))
      .then(
        () => {
          queued--;
          spares.push(buffer);
        },
        (error: unknown) => {
          state.size = -1;
          throw error;
        },
      );
    // Awaited by the next push or flush; marked handled so a failure between two is not fatal.
    last.catch(() => undefined);
    onProgress(state.size);
  };
  const push = (chunk: Buffer): Promise<void> | undefined => {
    for (let off = 0; off < chunk.length;) {
      const n = chunk.copy(filling, used, off);
      used += n;
      off += n;
      if (used === WRITE_CHUNK) startWrite();
    }
    return queued >= 2 ? beforeLast : undefined;
  };
  const flush = () => {
    startWrite();
    return last;
  };
  return { push, flush };
}

function retryable(error: unknown, opts: DownloadOptions): unknown {
  if (opts.signal?.aborted) return opts.signal.reason;
  if (error instanceof Retryable || isImgctlError(error)) return error;
  const code = (error as { code?: string })?.code;
  return new Retryable(code ?? (error as Error)?.message ?? String(error));
}
