/**
 * One HTTP request to a registry (or its token service) over node:http / node:https, with
 * keep-alive agents, the registry's CA file added to the CAs Node trusts, a stall timeout and an
 * abort signal. No auth, retries or redirects here: transport.ts decides those.
 */
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import { ImgctlError } from '../util/errors.ts';

/** A connection that sends or receives nothing for this long fails (it is retried above). */
export const STALL_MS = 120_000;
/** The certificates of the system, as Debian and most distributions keep them. */
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

export interface HttpSettings {
  caFile?: string;
  insecureHttp?: boolean;
  signal?: AbortSignal;
}

export interface Http {
  /** `https://HOST[:PORT]`, or `http://` with `insecureHttp` */
  origin: string;
  send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body?: Buffer,
  ): Promise<IncomingMessage>;
  close(): void;
}

/** The CAs a registry's certificate is checked against: Node's, the system's and `caFile`. */
async function certificates(caFile: string | undefined): Promise<string[] | undefined> {
  if (caFile === undefined) return undefined;
  let own: string;
  try {
    own = await readFile(caFile, 'utf8');
  } catch (error) {
    throw new ImgctlError(
      'USAGE',
      `cannot read the registry CA file ${caFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      { cause: error },
    );
  }
  if (!own.includes('-----BEGIN CERTIFICATE-----'))
    throw new ImgctlError('USAGE', `the registry CA file ${caFile} holds no PEM certificate`);
  const system = await readFile(SYSTEM_BUNDLE, 'utf8').catch(() => '');
  return [...rootCertificates, ...(system ? [system] : []), own];
}

export function makeHttp(registry: string, settings: HttpSettings): Http {
  const origin = `${settings.insecureHttp ? 'http' : 'https'}://${registry}`;
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  let httpsAgent: Promise<HttpsAgent> | undefined;
  const secureAgent = () =>
    (httpsAgent ??= certificates(settings.caFile).then(
      (ca) => new HttpsAgent({ keepAlive: true, maxSockets: 16, ...(ca ? { ca } : {}) }),
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
              : { 'content-length': String(body?.length ?? 0) }),
          },
          signal: settings.signal,
          timeout: STALL_MS,
        });
        req.on('timeout', () => req.destroy(new Error(`no data for ${STALL_MS / 1000} s`)));
        req.on('error', reject);
        req.on('response', (res) => {
          res.setTimeout(STALL_MS, () =>
            res.destroy(new Error(`no data for ${STALL_MS / 1000} s`)),
          );
          resolve(res);
        });
        req.end(body);
      });
    },
    close() {
      httpAgent.destroy();
      void httpsAgent?.then((agent) => agent.destroy());
    },
  };
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
