/**
 * The provisioning server (`imgctl serve`, docs/server.md): HTTP/1.1 or HTTPS over node:http,
 * read-only unless a write token is configured. This file owns the request lifecycle — limits,
 * path decoding, tokens, bodies, errors as JSON, one log line per request; routes.ts's table
 * answers.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type ErrorCode, ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { isBootToken } from './boot-tokens.ts';
import { HttpError } from './files.ts';
import type { Reply } from './route-table.ts';
import { createRoutes } from './routes.ts';

export interface ServerOptions {
  storeDir: string;
  /** default 127.0.0.1 */
  host?: string;
  /** default 8460; 0 picks a free port */
  port?: number;
  /** when set, every read needs `Authorization: Bearer <read or write token>` */
  readToken?: string;
  /** when set, POST /v1/events accepts it; without one the server is read-only */
  writeToken?: string;
  /** PEM contents; HTTPS when given */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** one line per request and per problem; never holds a token */
  log?: (line: string) => void;
  now?: () => Date;
  /** largest POST body accepted, bytes (default 64 KiB) */
  maxBodyBytes?: number;
  /** how long a network boot's token is accepted, ms (default 1 h) */
  bootTokenTtlMs?: number;
}

export interface RunningServer {
  /** e.g. http://127.0.0.1:8460 */
  url: string;
  host: string;
  port: number;
  server: Server;
  /** stops accepting, ends idle connections at once and the rest after `graceMs` */
  close(graceMs?: number): Promise<void>;
}

export const DEFAULT_PORT = 8460;
const MAX_HEADER_BYTES = 16 * 1024;
const MAX_URL_LENGTH = 4096;
const DEFAULT_MAX_BODY = 64 * 1024;
/** a body this far past the limit is not drained: the connection is closed instead */
const MAX_DRAIN = 16 * 1024 * 1024;

const STATUS_OF: Record<ErrorCode, number> = {
  USAGE: 400,
  VALIDATION: 422,
  NOT_FOUND: 404,
  CONFLICT: 409,
  HOST: 422,
  INTEGRITY: 500,
  FAILED: 500,
};

/** The HTTP status an ImgctlError is answered with. */
function httpStatusOf(code: ErrorCode): number {
  return STATUS_OF[code];
}

/** Starts listening; resolves once the socket is bound (so `port` is known even for 0). */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const storeDir = resolve(options.storeDir);
  const log = options.log ?? (() => undefined);
  const now = options.now ?? (() => new Date());
  const readToken = options.readToken === undefined ? undefined : tokenDigest(options.readToken);
  const writeToken = options.writeToken === undefined ? undefined : tokenDigest(options.writeToken);
  const routes = createRoutes(storeDir, now, log, {
    acceptsEvents: writeToken !== undefined,
    bootTokenTtlMs: options.bootTokenTtlMs,
  });
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const scheme = options.tls ? 'https' : 'http';

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    let bytes = 0;
    const rawUrl = req.url ?? '/';
    res.on('close', () => {
      const ms = (performance.now() - started).toFixed(1);
      const aborted = res.writableFinished ? '' : ' aborted';
      const address = req.socket.remoteAddress ?? '-';
      // a streamed body's byte count reaches `send` a few promise turns after its end, and the
      // response may close before those run (nextTick): log once they have
      setImmediate(() =>
        log(
          `${req.method} ${printableUrl(rawUrl)} ${res.statusCode} ${bytes}B ${ms}ms${aborted} ${address}`,
        ),
      );
    });
    const send = (reply: Reply) => {
      if ('streamed' in reply) {
        bytes = reply.bytes;
        return;
      }
      const body = typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body;
      res.writeHead(reply.status, {
        'content-type': reply.type,
        'content-length': body.length,
        ...reply.headers,
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      if (req.method !== 'HEAD') bytes = body.length;
    };
    handleRequest(req, res)
      .then(send)
      .catch((error: unknown) => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        send(errorReply(error, log));
      });
  };

  async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<Reply> {
    const rawUrl = req.url ?? '/';
    if (rawUrl.length > MAX_URL_LENGTH)
      throw new HttpError(414, 'USAGE', `the URL is longer than ${MAX_URL_LENGTH} characters`);
    const { segments, query } = parseTarget(rawUrl);
    const method = req.method ?? 'GET';
    const allowed = routes.methodsFor(segments);
    if (allowed.length > 0 && !allowed.includes(method)) {
      drain(req);
      throw new HttpError(405, 'USAGE', `${printable(method)} is not allowed here`, {
        headers: { allow: allowed.join(', ') },
      });
    }
    const presented = bearerOf(req);
    const isRead =
      readToken !== undefined && presented !== undefined && matches(presented, readToken);
    const isWrite =
      writeToken !== undefined && presented !== undefined && matches(presented, writeToken);
    const bootLike = presented !== undefined && !isRead && !isWrite && isBootToken(presented);
    const bootSystem = bootLike ? routes.bootSystemOf(presented) : undefined;
    const isBoot = bootSystem !== undefined;
    // Never taken as no token: a ramdisk would be served a redacted plan.
    if (bootLike && !isBoot) {
      drain(req);
      throw new HttpError(
        403,
        'USAGE',
        'this boot token has ended: it expired, its system posted done or failed, or the server restarted',
        {
          hint: 'network-boot the machine again for a new one',
          headers: { 'www-authenticate': 'Bearer realm="imgctl", error="invalid_token"' },
        },
      );
    }
    if (method === 'POST') {
      if (writeToken === undefined) {
        drain(req);
        throw new HttpError(403, 'USAGE', 'this server is read-only: it has no write token', {
          hint: 'start imgctl serve with --write-token-file FILE to accept events',
        });
      }
      checkToken(presented, isWrite || isBoot, 'write');
    } else if (readToken !== undefined && !routes.isOpen(method, segments)) {
      checkToken(presented, isRead || isWrite || isBoot, 'read');
    }
    let body: unknown;
    if (method === 'POST') body = await readJsonBody(req, maxBody);
    return routes.handle({
      method,
      segments,
      query,
      authed: isRead || isWrite || isBoot,
      bootSystem,
      req,
      res,
      body,
    });
  }

  const serverOptions = { maxHeaderSize: MAX_HEADER_BYTES };
  const server: Server = options.tls
    ? httpsServer(serverOptions, options.tls, onRequest)
    : createHttpServer(serverOptions, onRequest);
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    // Answered here rather than by node so the body is a JSON error like every other.
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    log(`- - ${status} 0B 0ms client error ${error.code ?? error.message}`);
    if (error.code !== 'ECONNRESET' && socket.writable) {
      const body = JSON.stringify({
        error: {
          code: 'USAGE',
          message: status === 431 ? 'request headers too large' : 'malformed request',
          hint: null,
        },
      });
      socket.end(
        `HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    } else socket.destroy();
  });

  // A failed TLS handshake (plain HTTP, an untrusted certificate) never reaches onRequest.
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    log(
      `- - - 0B 0ms TLS handshake failed ${error.code ?? error.message} ${socket.remoteAddress ?? '-'}`,
    );
  });

  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_PORT, host, () => {
      server.off('error', reject);
      resolveListen();
    });
  }).catch((error: NodeJS.ErrnoException) => {
    throw new ImgctlError(
      error.code === 'EADDRINUSE' ? 'CONFLICT' : 'FAILED',
      `cannot listen on ${host}:${options.port ?? DEFAULT_PORT}: ${error.message}`,
      {
        cause: error,
        hint:
          error.code === 'EADDRINUSE'
            ? 'another server uses that port; pick another with --listen'
            : undefined,
      },
    );
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `${scheme}://${urlHost}:${address.port}`,
    host: address.address,
    port: address.port,
    server,
    close(graceMs = 2000) {
      return new Promise<void>((done) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        routes.close();
        server.close(() => {
          clearTimeout(timer);
          done();
        });
        server.closeIdleConnections();
      });
    },
  };
}

/** Path segments (each percent-decoded, never normalized) and the query of a request target. */
export function parseTarget(rawUrl: string): { segments: string[]; query: URLSearchParams } {
  if (!rawUrl.startsWith('/'))
    throw new HttpError(400, 'USAGE', 'the request target must be an absolute path');
  const q = rawUrl.indexOf('?');
  const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const parts = rawPath.slice(1).split('/');
  if (parts.length > 1 && parts.at(-1) === '') parts.pop();
  const segments = parts.length === 1 && parts[0] === '' ? [] : parts;
  const decoded = segments.map((part) => {
    let segment: string;
    try {
      segment = decodeURIComponent(part);
    } catch {
      throw new HttpError(400, 'USAGE', `malformed percent-encoding in '${printable(part)}'`);
    }
    if (segment === '' || segment === '.' || segment === '..' || /[\0/\\]/.test(segment)) {
      throw new HttpError(400, 'USAGE', `path segment '${printable(segment)}' is not allowed`, {
        hint: 'paths are names and file names; "..", empty segments, slashes and NULs are refused',
      });
    }
    return segment;
  });
  let query: URLSearchParams;
  try {
    query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1));
  } catch {
    throw new HttpError(400, 'USAGE', 'malformed query string');
  }
  return { segments: decoded, query };
}

function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** Constant-time: both sides are hashed to 32 bytes first, so lengths leak nothing either. */
function matches(presented: string, expected: Buffer): boolean {
  return timingSafeEqual(tokenDigest(presented), expected);
}

function bearerOf(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header === undefined) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1] : '';
}

function checkToken(presented: string | undefined, ok: boolean, kind: 'read' | 'write'): void {
  if (presented === undefined) {
    throw new HttpError(401, 'USAGE', `this request needs the ${kind} token`, {
      hint: 'send it as Authorization: Bearer TOKEN (imgagent --token, or the client token option)',
      headers: { 'www-authenticate': 'Bearer realm="imgctl"' },
    });
  }
  if (!ok) {
    throw new HttpError(403, 'USAGE', `the token is not the ${kind} token of this server`, {
      headers: { 'www-authenticate': 'Bearer realm="imgctl", error="invalid_token"' },
    });
  }
}

/** Reads the body; past `max` bytes it is drained (up to a bound) and refused with 413. */
async function readJsonBody(req: IncomingMessage, max: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  const tooLarge = () =>
    new HttpError(413, 'USAGE', `the request body is larger than ${max} bytes`, {
      headers: { connection: 'close' },
    });
  if (declared > MAX_DRAIN) {
    req.socket.destroySoon();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_DRAIN) {
      req.destroy();
      throw tooLarge();
    }
    if (size <= max) chunks.push(chunk);
  }
  if (size > max) throw tooLarge();
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'USAGE', 'the request body is not valid JSON', {
      hint: 'send one JSON object, e.g. {"system":"web01","phase":"started"}',
    });
  }
}

function drain(req: IncomingMessage): void {
  req.resume();
}

function errorReply(error: unknown, log: (line: string) => void): Reply {
  let status: number;
  let code: string;
  let message: string;
  let hint: string | null = null;
  let headers: Record<string, string> = {};
  if (error instanceof HttpError) {
    ({ status, code, message, headers } = error);
    hint = error.hint ?? null;
  } else if (error instanceof ImgctlError) {
    status = httpStatusOf(error.code);
    code = error.code;
    message =
      error.details.length > 0 ? `${error.message}: ${error.details.join('; ')}` : error.message;
    hint = error.hint ?? null;
  } else {
    status = 500;
    code = 'FAILED';
    message = 'internal error (a bug; the server log has the trace)';
    const stack = error instanceof Error ? (error.stack ?? error.message) : String(error);
    log(`internal error: ${stack}`);
  }
  return {
    status,
    body: `${JSON.stringify({ error: { code, message, hint } }, null, 2)}\n`,
    type: 'application/json',
    headers: { 'cache-control': 'no-store', ...headers },
  };
}

/** The HTTPS server; a certificate or key that is not PEM, or not a pair, is a VALIDATION error. */
function httpsServer(
  serverOptions: { maxHeaderSize: number },
  tls: { cert: string | Buffer; key: string | Buffer },
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
): Server {
  try {
    return createHttpsServer({ ...serverOptions, cert: tls.cert, key: tls.key }, onRequest);
  } catch (error) {
    throw new ImgctlError(
      'VALIDATION',
      `cannot serve HTTPS with this certificate and key: ${(error as Error).message}`,
      {
        hint: '--tls-cert takes a PEM certificate, --tls-key its PEM private key',
        cause: error,
      },
    );
  }
}

const PLAIN_URL = /^[\x21-\x7e]*$/;

/**
 * Each `set` parameter of the query as `set=NAME=<redacted>`. Parameters are told apart as
 * parseTarget's URLSearchParams does (`&`-separated, the name decoded: `%73et` is `set` too).
 */
function redactSets(rawUrl: string): string {
  const q = rawUrl.indexOf('?');
  if (q < 0) return rawUrl;
  const params = rawUrl
    .slice(q + 1)
    .split('&')
    .map((param) => {
      if ([...new URLSearchParams(param).keys()][0] !== 'set') return param;
      const eq = param.indexOf('=');
      const value = eq < 0 ? '' : param.slice(eq + 1);
      const nameEnd = value.search(/=|%3d/i);
      return `${param.slice(0, eq < 0 ? param.length : eq)}=${nameEnd < 0 ? '' : `${value.slice(0, nameEnd)}=`}<redacted>`;
    });
  return `${rawUrl.slice(0, q + 1)}${params.join('&')}`;
}

/**
 * The request target as logged: the values of `set` parameters (given with --set, maybe
 * secrets) are replaced by `<redacted>`, keeping their names; control characters escaped;
 * clipped at 200 characters.
 */
function printableUrl(rawUrl: string): string {
  const url = redactSets(rawUrl);
  if (url.length <= 200 && PLAIN_URL.test(url)) return url;
  const clipped = url.length > 200 ? `${url.slice(0, 200)}…` : url;
  return clipped.replace(
    /[^\x21-\x7e]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}
