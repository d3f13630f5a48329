/**
 * A request to the registry as the distribution spec has a client make it: authenticated as
 * the registry's 401 challenge asks (one new attempt per request: a token can expire between
 * two chunks of an upload), retried with backoff on 429, 5xx and broken connections when the
 * request can be repeated, redirects followed only to the same origin (a blob GET may go to
 * another host — storage — without the Authorization header), and the registry's JSON errors
 * turned into ImgctlErrors.
 */
import type { IncomingMessage } from 'node:http';
import { type ErrorCode, errorCode, ImgctlError } from '../util/errors.ts';
import { type Authenticator, parseChallenges } from './auth.ts';
import { type Body, drain, header, type Http, readBody } from './http.ts';
import {
  isRetryableError,
  isRetryableStatus,
  RETRIES,
  retryDelay,
  TLS_ERROR,
  waitToRetry,
} from './retry.ts';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Request {
  method: Method;
  /** a path of the registry (`/v2/…`) or a URL it gave (a Location) */
  url: string | URL;
  headers?: Record<string, string>;
  /** bytes, pieces sent one after the other, or an upload's chunk read from its file as it is sent */
  body?: Body;
  /** the token scope the request needs: `repository:NAME:pull` or `…:pull,push` */
  scope: string;
  /** scopes asked for besides, e.g. pull on a mount's source repository */
  extraScopes?: string[];
  /** how messages name the request: `GET manifest web:1.0` */
  what: string;
  /** a blob GET: a redirect may go to another host (then without Authorization) */
  blobRedirects?: boolean;
  /**
   * 429, 5xx and broken connections retried with backoff (default); false: the caller handles
   * them (an upload's PATCH, which is resumed from the registry's offset instead)
   */
  retry?: boolean;
  /** statuses returned to the caller instead of thrown, besides 2xx */
  expect?: readonly number[];
  /** the error code of a 4xx the registry refuses the request with (default FAILED) */
  refusedCode?: ErrorCode;
}

export interface Response {
  status: number;
  /** where the answer came from (after redirects) */
  url: URL;
  res: IncomingMessage;
  header(name: string): string | undefined;
}

export interface Transport {
  registry: string;
  origin: string;
  request(request: Request): Promise<Response>;
  /** an upload Location or a redirect, resolved against `base` and checked to stay on the origin */
  resolve(location: string, base: URL, what: string): URL;
  /** throws the error a registry's answer means (for a status the caller asked to see) */
  fail(request: Request, response: Response): Promise<never>;
  log(line: string): void;
  signal?: AbortSignal;
}

const MAX_REDIRECTS = 5;
const ERROR_BODY_LIMIT = 64 * 1024;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** The error a failed connection becomes once its retries are spent. */
export function connectionError(what: string, origin: string, error: unknown): ImgctlError {
  if (error instanceof ImgctlError) return error;
  const code = (error as NodeJS.ErrnoException)?.code;
  const detail = errorCode(error);
  const tls = TLS_ERROR.test(code ?? '');
  return new ImgctlError('FAILED', `${what}: cannot reach ${origin} (${detail})`, {
    cause: error,
    hint: tls
      ? "the registry's certificate is not trusted: give its CA with --registry-ca FILE"
      : 'check the registry address and that it is running',
  });
}

/** The registry's JSON error (`{"errors": [{"code", "message"}]}`) as a short text. */
async function errorText(res: IncomingMessage): Promise<{ text: string; codes: string[] }> {
  let body = '';
  try {
    body = (await readBody(res, ERROR_BODY_LIMIT, () => new Error('long'))).toString('utf8');
  } catch {
    // a long or broken error body: the status alone says it
  }
  try {
    const parsed = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
    const errors = (parsed.errors ?? []).filter((e) => typeof e?.code === 'string');
    if (errors.length > 0)
      return {
        text: errors
          .map(
            (e) => `${String(e.code)}${e.message ? ` (${String(e.message).slice(0, 200)})` : ''}`,
          )
          .join(', '),
        codes: errors.map((e) => String(e.code)),
      };
  } catch {
    // not JSON
  }
  const line = body.split('\n')[0]!.trim().slice(0, 200);
  return { text: line, codes: [] };
}

export function makeTransport(
  http: Http,
  auth: Authenticator,
  registry: string,
  options: { log?: (line: string) => void; signal?: AbortSignal },
): Transport {
  const origin = http.origin;
  const log = (line: string) => options.log?.(line);
  const resolve = (location: string, base: URL, what: string): URL => {
    let url: URL;
    try {
      url = new URL(location, base);
    } catch {
      throw new ImgctlError(
        'FAILED',
        `${what}: ${registry} pointed to '${location.slice(0, 200)}'`,
      );
    }
    if (url.origin !== origin)
      throw new ImgctlError(
        'FAILED',
        `${what}: ${registry} pointed to ${url.origin}${url.pathname}; imgctl follows the registry only within ${origin}`,
        { hint: 'a proxy or the registry is configured to send clients elsewhere' },
      );
    return url;
  };

  const fail = async (request: Request, response: Response): Promise<never> => {
    const { status } = response;
    const { text, codes } = await errorText(response.res);
    const said = `${request.what}: ${registry} answered ${status}${text ? ` ${text}` : ''}`;
    if (status === 404) throw new ImgctlError('NOT_FOUND', said);
    if (codes.includes('DIGEST_INVALID')) throw new ImgctlError('INTEGRITY', said);
    if (status === 403)
      throw new ImgctlError('USAGE', said, {
        hint: `not allowed with ${await auth.describe()} (${request.scope})`,
      });
    if (status >= 400 && status < 500 && status !== 429)
      throw new ImgctlError(request.refusedCode ?? 'FAILED', said);
    throw new ImgctlError('FAILED', said, { hint: 'the registry failed: try again later' });
  };

  const request = async (req: Request): Promise<Response> => {
    let url = typeof req.url === 'string' ? new URL(req.url, origin) : req.url;
    let sendAuth = true;
    let reauthenticated = false;
    let redirects = 0;
    for (let attempt = 0; ;) {
      options.signal?.throwIfAborted();
      const authorization = sendAuth ? await auth.authorization(req.scope) : undefined;
      let res: IncomingMessage;
      try {
        res = await http.send(
          req.method,
          url,
          { ...req.headers, ...(authorization ? { authorization } : {}) },
          req.body,
        );
      } catch (error) {
        if (req.retry === false || !isRetryableError(error, options.signal)) {
          if (options.signal?.aborted) throw options.signal.reason;
          throw req.retry === false ? error : connectionError(req.what, origin, error);
        }
        if (attempt >= RETRIES) throw connectionError(req.what, origin, error);
        await waitToRetry(
          retryDelay(attempt, undefined),
          `${req.what}: ${errorCode(error)}`,
          options.log,
          options.signal,
        );
        attempt += 1;
        continue;
      }
      const status = res.statusCode ?? 0;
      const response: Response = { status, url, res, header: (name) => header(res, name) };

      if (status === 401 && sendAuth) {
        const challenge = header(res, 'www-authenticate');
        drain(res);
        if (!reauthenticated && (await auth.challenged(challenge, req.scope, req.extraScopes))) {
          reauthenticated = true;
          continue;
        }
        const used = await auth.describe();
        const bearer = parseChallenges(challenge ?? '').find((c) => c.scheme === 'bearer');
        if (bearer?.params.error === 'insufficient_scope' && used.startsWith('the credentials'))
          throw new ImgctlError(
            'USAGE',
            `${req.what}: ${registry} refused ${used}: the token they get does not grant ${req.scope} (401 insufficient_scope)`,
            {
              hint: 'the token service gives that user less than this needs: grant it, or use credentials that have it',
            },
          );
        throw new ImgctlError('USAGE', `${req.what}: ${registry} refused ${used} (401)`, {
          hint: used.startsWith('the credentials')
            ? 'check the user and password in that file, and that the user may use this repository'
            : `give credentials for ${registry} with --registry-auth FILE (or $REGISTRY_AUTH_FILE, or ~/.docker/config.json)`,
        });
      }
      if ((req.expect ?? []).includes(status)) return response;
      if (REDIRECTS.has(status)) {
        const location = header(res, 'location');
        drain(res);
        if (location === undefined)
          throw new ImgctlError(
            'FAILED',
            `${req.what}: ${registry} redirected (${status}) to nowhere`,
          );
        if (++redirects > MAX_REDIRECTS)
          throw new ImgctlError('FAILED', `${req.what}: more than ${MAX_REDIRECTS} redirects`);
        const next = new URL(location, url);
        if (next.origin === origin) {
          url = next;
        } else if (
          req.blobRedirects &&
          req.method === 'GET' &&
          (next.protocol === 'https:' || origin.startsWith('http:'))
        ) {
          // blob storage elsewhere (a CDN, an object store): the URL carries its own signature
          url = next;
          sendAuth = false;
        } else {
          url = resolve(location, url, req.what);
        }
        continue;
      }
      if (isRetryableStatus(status) && req.retry !== false) {
        if (attempt >= RETRIES) return fail(req, response);
        drain(res);
        await waitToRetry(
          retryDelay(attempt, header(res, 'retry-after')),
          `${req.what}: ${status}`,
          options.log,
          options.signal,
        );
        attempt += 1;
        continue;
      }
      if (status >= 200 && status < 300) return response;
      return fail(req, response);
    }
  };

  return { registry, origin, request, resolve, fail, log, signal: options.signal };
}
