/**
 * One HTTP request to a registry (or its token service) over node:http / node:https, with
 * keep-alive agents, the registry's CA file added to the CAs Node trusts, a stall timeout and an
 * abort signal. No auth, retries or redirects here: transport.ts decides those.
 */
import { readFile } from 'node:fs/promises';
import {
  Agent as HttpAgent,
  type ClientRequest,
  type IncomingMessage,
  request as httpRequest,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createSecureContext, rootCertificates } from 'node:tls';
import { errorCode, ImgctlError } from '../util/errors.ts';

/** A connection that sends or receives nothing for this long fails (it is retried above). */
export const STALL_MS = 120_000;
/**
 * A new connection not made (TCP, and TLS's handshake) in this long fails (it is retried
 * above): a registry behind a firewall that drops packets, or a port that never speaks TLS,
 * is given up in seconds, not after the stall timeout — an agent then tries its next source.
 */
export const CONNECT_MS = 30_000;
/** The certificates of the system, as Debian and most distributions keep them. */
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

export interface HttpSettings {
  caFile?: string;
  insecureHttp?: boolean;
  signal?: AbortSignal;
  /** default CONNECT_MS */
  connectTimeoutMs?: number;
}

/**
 * `length` bytes read while they are sent (an upload's chunk from its file): nothing waits for
 * the whole of it, and nothing holds it. `read()` starts again for each attempt (a 401 or a
 * redirect sends the body again).
 */
export interface StreamedBody {
  length: number;
  read(): AsyncIterable<Buffer>;
}

/** A request body: bytes, pieces sent one after the other, or bytes read as they are sent. */
export type Body = Buffer | readonly Buffer[] | StreamedBody;

const isStreamed = (body: Body): body is StreamedBody => 'read' in body;

const bodyLength = (body: Body) =>
  Buffer.isBuffer(body)
    ? body.length
    : isStreamed(body)
      ? body.length
      : body.reduce((n, piece) => n + piece.length, 0);

export interface Http {
  /** `https://HOST[:PORT]`, or `http://` with `insecureHttp` */
  origin: string;
  send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body?: Body,
  ): Promise<IncomingMessage>;
  close(): void;
}

/**
 * The CAs a registry's certificate is checked against: the system's (Node's own when the system
 * has none) and `caFile`. Not both lists: Debian's is Mozilla's, as Node's is, and parsing the
 * two took twice as long (~50 ms of every push's start).
 */
async function certificates(caFile: string | undefined): Promise<string[] | undefined> {
  if (caFile === undefined) return undefined;
  let own: string;
  try {
    own = await readFile(caFile, 'utf8');
  } catch (error) {
    throw new ImgctlError(
      'USAGE',
      `cannot read the registry CA file ${caFile}: ${errorCode(error)}`,
      { cause: error },
    );
  }
  if (!own.includes('-----BEGIN CERTIFICATE-----'))
    throw new ImgctlError('USAGE', `the registry CA file ${caFile} holds no PEM certificate`);
  const system = await readFile(SYSTEM_BUNDLE, 'utf8').catch(() => '');
  return [...(system ? [system] : rootCertificates), own];
}

export function makeHttp(registry: string, settings: HttpSettings): Http {
  const origin = `${settings.insecureHttp ? 'http' : 'https'}://${registry}`;
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  let httpsAgent: Promise<HttpsAgent> | undefined;
  const secureAgent = () =>
    (httpsAgent ??= certificates(settings.caFile).then(
      // one context made once: with `ca`, the agent would join every certificate into the
      // name it gives each request's connection pool
      (ca) =>
        new HttpsAgent({
          keepAlive: true,
          maxSockets: 16,
          ...(ca ? { secureContext: createSecureContext({ ca }) } : {}),
        }),
    ));

  return {
    origin,
    async send(method, url, headers, body) {
      settings.signal?.throwIfAborted();
      const secure = url.protocol === 'https:';
      const agent = secure ? await secureAgent() : httpAgent;
      const request = secure ? httpsRequest : httpRequest;
      return new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(url, {
          method,
          agent,
          headers: {
            ...headers,
            ...(body === undefined && method !== 'PUT' && method !== 'POST'
              ? {}
              : { 'content-length': String(body === undefined ? 0 : bodyLength(body)) }),
          },
          signal: settings.signal,
          timeout: STALL_MS,
        });
        req.on('timeout', () => req.destroy(new Error(`no data for ${STALL_MS / 1000} s`)));
        req.on('socket', (socket) => {
          if (req.reusedSocket) return;
          const connectMs = settings.connectTimeoutMs ?? CONNECT_MS;
          const timer = setTimeout(() => {
            const error = new Error(`no connection in ${connectMs / 1000} s`);
            req.destroy(Object.assign(error, { code: 'ETIMEDOUT' }));
          }, connectMs);
          socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(timer));
          socket.once('close', () => clearTimeout(timer));
        });
        req.on('error', reject);
        req.on('response', (res) => {
          res.setTimeout(STALL_MS, () =>
            res.destroy(new Error(`no data for ${STALL_MS / 1000} s`)),
          );
          // answered before the body was sent (a 401, a 413): the rest of it is of no use, and
          // a server that stops reading would hold the body's file and this socket for ever
          if (body !== undefined && !req.writableFinished) res.once('end', () => req.destroy());
          resolve(res);
        });
        void writeBody(req, body).catch((error: Error) => req.destroy(error));
      });
    },
    close() {
      httpAgent.destroy();
      void httpsAgent?.then((agent) => agent.destroy());
    },
  };
}

/** the most handed to a socket at once: TLS encrypts what it is given before sending any of it */
const WRITE_SLICE = 1024 * 1024;

/**
 * Sends `body` in slices, each once the socket took the previous one, and ends the request. A
 * streamed body that fails (its source is short or unreadable) destroys the request with that
 * error.
 */
async function writeBody(req: ClientRequest, body: Body | undefined): Promise<void> {
  const pieces =
    body === undefined
      ? []
      : Buffer.isBuffer(body)
        ? [body]
        : isStreamed(body)
          ? body.read()
          : body;
  for await (const piece of pieces)
    for (let at = 0; at < piece.length; at += WRITE_SLICE) {
      if (req.destroyed) return;
      if (!req.write(piece.subarray(at, at + WRITE_SLICE)))
        await new Promise<void>((resolve) => {
          const done = () => {
            req.off('drain', done);
            req.off('close', done);
            resolve();
          };
          req.on('drain', done);
          req.on('close', done);
        });
    }
  req.end();
}

/** Reads a response body as bytes, at most `limit`: more is an error made by `tooBig`. */
export async function readBody(
  res: IncomingMessage,
  limit: number,
  tooBig: () => Error,
): Promise<Buffer> {
  const length = Number(res.headers['content-length']);
  if (Number.isFinite(length) && length > limit) {
    res.destroy();
    throw tooBig();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      res.destroy();
      throw tooBig();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Reads and drops what is left of a body, so its connection is used again: the socket goes back
 * to the agent only once the body has ended, even an empty one that already arrived.
 */
export function drain(res: IncomingMessage): void {
  res.resume();
}

/** A header's value (the first, when repeated). */
export function header(res: IncomingMessage, name: string): string | undefined {
  const value = res.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
