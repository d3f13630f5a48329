/**
 * One HTTP/1.1 GET over a plain net or tls socket, for blob bodies. The body is read into one
 * reused buffer (the socket's `onread`), so receiving costs little more than the kernel's copy.
 *
 * Why not fetch or node:http for blobs: receiving 1 GiB over loopback here cost ~2.2 s of CPU
 * through fetch and ~1.5 s through node:http (a new Buffer and a stream event per 64 KiB),
 * against ~0.6 s this way — and on a two-core host that CPU is taken from hashing and from the
 * server. JSON calls stay on ky. HTTPS trusts what `tls.connect` trusts: the system CAs plus
 * `NODE_EXTRA_CA_CERTS`.
 *
 * `imgctl serve` sends a Content-Length; a proxy in between may re-frame the body as chunked,
 * which is decoded here (the sha256 the caller checks still covers the content). What would
 * change the bytes (another transfer or content coding) and redirects are refused with an
 * ImgctlError naming them: the server never redirects, so a redirect means the URL or a proxy is
 * wrong, and following it would take the request, and its token, elsewhere.
 */
import { isIP, connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';
import { ImgctlError } from '../util/errors.ts';

const READ_BUFFER = 1024 * 1024;
const MAX_HEAD = 64 * 1024;
const MAX_CHUNK_LINE = 4 * 1024;
const EMPTY = Buffer.alloc(0);
const REDIRECTS = [301, 302, 303, 307, 308];
const PROXY_HINT =
  'imgctl serve sends blobs as they are: let the proxy between here and the server pass /v1/blobs/ through unchanged';

export interface RawResponse {
  status: number;
  /** lower-case names; repeated headers joined with ', ' */
  headers: Record<string, string>;
  /**
   * How the end of the body is known: its Content-Length, its last chunk (Transfer-Encoding:
   * chunked, whatever Content-Length says), or only the close of the connection — then a body
   * cut short reads as a whole one.
   */
  framing: 'length' | 'chunked' | 'close';
  /**
   * Reads the body to its end (see `framing`), handing on its content (a chunked body's data,
   * without the framing). A chunk is a view of the read buffer, valid only during the call; a
   * returned promise pauses reading until it settles (and a rejection ends the read with it).
   * Rejects when the connection ends before the body does.
   */
  read(onChunk: (chunk: Buffer) => void | Promise<void>): Promise<void>;
  /** the body as text, at most `limit` bytes (the rest is dropped); closes the connection */
  text(limit?: number): Promise<string>;
  close(): void;
}

export interface HttpGetOptions {
  signal?: AbortSignal;
  /** the request fails when no byte arrives for this long, connecting included */
  stallMs: number;
}

/**
 * Resolves once the status line and headers arrived; the body is read with `read` or `text`.
 * Rejects with an ImgctlError on a redirect (USAGE) or a transfer or content coding other than
 * chunked (FAILED), which another request would not fix.
 */
export function httpGet(
  url: URL,
  headers: Record<string, string>,
  options: HttpGetOptions,
): Promise<RawResponse> {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const secure = url.protocol === 'https:';
  const port = Number(url.port || (secure ? 443 : 80));
  let head: Buffer | undefined = Buffer.alloc(0);
  let early: Buffer | undefined;
  let onData: ((chunk: Buffer) => void) | undefined;
  let onEnd: (() => void) | undefined;
  let finish: ((error?: Error) => void) | undefined;
  let failed: Error | undefined;
  let stallTimer: NodeJS.Timeout | undefined;

  return new Promise<RawResponse>((resolveHead, rejectHead) => {
    const fail = (error: Error) => {
      if (failed) return;
      failed = error;
      clearTimeout(stallTimer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (head) rejectHead(error);
      else finish?.(error);
    };
    const armStall = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(
        () => fail(new Error(`no data for ${options.stallMs} ms`)),
        options.stallMs,
      );
    };
    const onAbort = () => fail(options.signal?.reason as Error);

    const onread: OnReadOpts = {
      buffer: Buffer.allocUnsafe(READ_BUFFER),
      callback: (nread: number, buffer: Buffer): boolean => {
        armStall();
        const chunk = buffer.subarray(0, nread);
        if (head === undefined) {
          onData?.(chunk);
          return true;
        }
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > MAX_HEAD) fail(new Error('the response head is too long'));
          return true;
        }
        const parsed = parseHead(head.subarray(0, end).toString('latin1'));
        if (parsed === undefined) {
          fail(new Error('the response is not HTTP/1.x'));
          return true;
        }
        const framing = checkHead(url, parsed.status, parsed.headers);
        if (framing instanceof Error) {
          fail(framing);
          return true;
        }
        early = head.subarray(end + 4);
        head = undefined;
        socket.pause();
        resolveHead(makeResponse(parsed.status, parsed.headers, framing));
        return true;
      },
    };
    const socket: Socket = secure
      ? // node's tls passes onread to its socket (Node >= 14); its types do not say so
        tlsConnect({
          host,
          port,
          servername: isIP(host) ? undefined : host,
          onread,
        } as ConnectionOptions)
      : netConnect({ host, port, onread });

    const makeResponse = (
      status: number,
      responseHeaders: Record<string, string>,
      framing: RawResponse['framing'],
    ): RawResponse => {
      const length = framing === 'length' ? Number(responseHeaders['content-length']) : undefined;
      const read = (onChunk: (chunk: Buffer) => void | Promise<void>) =>
        new Promise<void>((resolveBody, rejectBody) => {
          const body = framing === 'chunked' ? chunkedBody() : sizedBody(length ?? Infinity);
          let received = 0;
          let done = false;
          let waiting = false;
          let ended = false;
          // What arrived after a chunk whose promise is pending: a copy, as the buffer is reused.
          let held: Buffer | undefined;
          finish = (error) => {
            if (done) return;
            done = true;
            clearTimeout(stallTimer);
            options.signal?.removeEventListener('abort', onAbort);
            socket.destroy();
            if (error) rejectBody(error);
            else resolveBody();
          };
          if (failed) return finish(failed);
          const settleEnd = () => {
            if (body.done || framing === 'close') return finish?.();
            finish?.(
              new Error(
                framing === 'length'
                  ? `the body ended at ${received} of ${length} bytes`
                  : `the body ended at ${received} bytes, before its last chunk`,
              ),
            );
          };
          const pump = (chunk: Buffer): void => {
            let at = 0;
            while (!done) {
              if (body.done) return finish?.();
              if (at >= chunk.length) return;
              let piece: { data: Buffer; at: number };
              let pending: void | Promise<void>;
              try {
                piece = body.next(chunk, at);
                at = piece.at;
                if (piece.data.length === 0) continue;
                received += piece.data.length;
                pending = onChunk(piece.data);
              } catch (error) {
                return finish?.(error as Error);
              }
              if (!pending) continue;
              waiting = true;
              socket.pause();
              if (at < chunk.length) held = Buffer.from(chunk.subarray(at));
              pending.then(
                () => {
                  waiting = false;
                  const rest = held ?? EMPTY;
                  held = undefined;
                  pump(rest);
                  if (waiting || done) return;
                  if (ended) settleEnd();
                  else socket.resume();
                },
                (error: Error) => finish?.(error),
              );
              return;
            }
          };
          onData = (chunk) => {
            if (done) return;
            if (waiting) held = Buffer.concat([held ?? EMPTY, chunk]);
            else pump(chunk);
          };
          onEnd = () => {
            ended = true;
            if (!waiting) settleEnd();
          };
          const first = early ?? EMPTY;
          early = undefined;
          pump(first);
          if (!waiting) socket.resume();
        });
      return {
        status,
        headers: responseHeaders,
        framing,
        read,
        async text(limit = 64 * 1024) {
          const parts: Buffer[] = [];
          let size = 0;
          await read((chunk) => {
            if (size < limit) parts.push(Buffer.from(chunk.subarray(0, limit - size)));
            size += chunk.length;
          }).catch(() => undefined);
          return Buffer.concat(parts).toString('utf8');
        },
        close: () => fail(new Error('closed')),
      };
    };

    socket.on('error', fail);
    // While a body is read, its framing decides whether the end of the connection is an error.
    socket.on('end', () => onEnd?.());
    socket.on('close', () => (onEnd ? onEnd() : fail(new Error('the connection closed'))));
    if (options.signal?.aborted) return fail(options.signal.reason as Error);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    armStall();
    const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
    for (const [name, value] of Object.entries({ ...headers, connection: 'close' })) {
      if (/[\r\n]/.test(value)) return fail(new Error(`header ${name} holds a line break`));
      lines.push(`${name}: ${value}`);
    }
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  });
}

function parseHead(text: string): { status: number; headers: Record<string, string> } | undefined {
  const [statusLine, ...lines] = text.split('\r\n');
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '');
  if (!match) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = Object.hasOwn(headers, name) ? `${headers[name]}, ${value}` : value;
  }
  return { status: Number(match[1]), headers };
}

/** The body's framing, or why the response is refused. */
function checkHead(
  url: URL,
  status: number,
  headers: Record<string, string>,
): RawResponse['framing'] | Error {
  const where = showUrl(url);
  if (REDIRECTS.includes(status)) {
    const location = headers.location;
    let target = 'nowhere (no Location)';
    if (location !== undefined) {
      try {
        target = showUrl(new URL(location, url));
      } catch {
        target = JSON.stringify(location.slice(0, 200));
      }
    }
    return new ImgctlError(
      'USAGE',
      `${where} redirects (HTTP ${status}) to ${target}; blob downloads do not follow redirects`,
      {
        hint: 'imgctl serve never redirects: give the URL of the server itself, or let the proxy in between pass /v1/blobs/ through',
      },
    );
  }
  const coding = headers['transfer-encoding'];
  if (coding !== undefined && coding.toLowerCase() !== 'chunked') {
    return new ImgctlError(
      'FAILED',
      `${where}: the response has Transfer-Encoding '${coding.slice(0, 100)}'; only chunked is decoded`,
      { hint: PROXY_HINT },
    );
  }
  const contentCoding = headers['content-encoding'];
  if (contentCoding !== undefined && contentCoding.toLowerCase() !== 'identity') {
    return new ImgctlError(
      'FAILED',
      `${where}: the response has Content-Encoding '${contentCoding.slice(0, 100)}', which would change the blob`,
      { hint: PROXY_HINT },
    );
  }
  if (coding !== undefined) return 'chunked';
  const length = headers['content-length'];
  if (length === undefined) return 'close';
  if (!/^\d{1,15}$/.test(length)) {
    return new Error(`the response has an invalid Content-Length '${length.slice(0, 100)}'`);
  }
  return 'length';
}

/** Origin and path: a query or user info may hold a credential, so neither is shown. */
function showUrl(url: URL): string {
  return `${url.origin}${url.pathname.slice(0, 200)}`;
}

interface BodyFraming {
  /** the body's end was seen */
  readonly done: boolean;
  /** the next content in `chunk` from `at` on (maybe empty), and where the rest begins */
  next(chunk: Buffer, at: number): { data: Buffer; at: number };
}

/** A body of `length` bytes (Infinity: up to the close); what follows it is dropped. */
function sizedBody(length: number): BodyFraming {
  let left = length;
  return {
    get done() {
      return left === 0;
    },
    next(chunk, at) {
      const end = Math.min(chunk.length, at + left);
      left -= end - at;
      return { data: chunk.subarray(at, end), at: chunk.length };
    },
  };
}

/** A chunked body (RFC 9112 §7.1): sizes in hex, extensions and trailer fields ignored. */
function chunkedBody(): BodyFraming {
  let phase: 'size' | 'data' | 'data-end' | 'trailer' | 'done' = 'size';
  let left = 0;
  let line = '';
  return {
    get done() {
      return phase === 'done';
    },
    next(chunk, at) {
      while (at < chunk.length && phase !== 'done') {
        if (phase === 'data') {
          const end = Math.min(chunk.length, at + left);
          left -= end - at;
          if (left === 0) phase = 'data-end';
          return { data: chunk.subarray(at, end), at: end };
        }
        const newline = chunk.indexOf(0x0a, at);
        const stop = newline < 0 ? chunk.length : newline + 1;
        line += chunk.toString('latin1', at, stop);
        at = stop;
        if (line.length > MAX_CHUNK_LINE) throw new Error('the chunked body has a line too long');
        if (newline < 0) break;
        const text = line.replace(/\r?\n$/, '');
        line = '';
        if (phase === 'data-end') {
          if (text !== '') throw new Error('a chunk of the body is longer than its size says');
          phase = 'size';
        } else if (phase === 'size') {
          const size = /^0*([0-9a-f]{1,13})[ \t]*(?:;.*)?$/i.exec(text);
          if (!size) throw new Error(`the chunked body has an invalid chunk size line`);
          left = parseInt(size[1]!, 16);
          phase = left === 0 ? 'trailer' : 'data';
        } else if (text === '') {
          phase = 'done';
        }
      }
      return { data: EMPTY, at };
    },
  };
}
