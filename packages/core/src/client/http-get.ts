/**
 * One HTTP/1.1 GET over a plain net or tls socket, for blob bodies. The body is read into one
 * reused buffer (the socket's `onread`), so receiving costs little more than the kernel's copy.
 *
 * Why not fetch or node:http for blobs: receiving 1 GiB over loopback here cost ~2.2 s of CPU
 * through fetch and ~1.5 s through node:http (a new Buffer and a stream event per 64 KiB),
 * against ~0.6 s this way — and on a two-core host that CPU is taken from hashing and from the
 * server. JSON calls stay on ky. HTTPS trusts what `tls.connect` trusts: the system CAs plus
 * `NODE_EXTRA_CA_CERTS`.
 */
import { isIP, connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';

const READ_BUFFER = 1024 * 1024;
const MAX_HEAD = 64 * 1024;

export interface RawResponse {
  status: number;
  /** lower-case names; repeated headers joined with ', ' */
  headers: Record<string, string>;
  /**
   * Reads the body to its end (Content-Length, else the close of the connection). A chunk is a
   * view of the read buffer, valid only during the call; a returned promise pauses reading until
   * it settles (and a rejection ends the read with it). Rejects when the connection ends early.
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

/** Resolves once the status line and headers arrived; the body is read with `read` or `text`. */
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
        early = head.subarray(end + 4);
        head = undefined;
        socket.pause();
        resolveHead(makeResponse(parsed.status, parsed.headers));
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

    const makeResponse = (status: number, responseHeaders: Record<string, string>) => {
      const declared = responseHeaders['content-length'];
      const length = declared === undefined ? undefined : Number(declared);
      const read = (onChunk: (chunk: Buffer) => void | Promise<void>) =>
        new Promise<void>((resolveBody, rejectBody) => {
          let received = 0;
          let done = false;
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
          onData = (chunk) => {
            if (done) return;
            const room = length === undefined ? chunk.length : length - received;
            const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
            received += part.length;
            let waiting: void | Promise<void>;
            try {
              waiting = onChunk(part);
            } catch (error) {
              return finish?.(error as Error);
            }
            if (length !== undefined && received >= length) {
              if (waiting)
                waiting.then(
                  () => finish?.(),
                  (error: Error) => finish?.(error),
                );
              else finish?.();
            } else if (waiting) {
              socket.pause();
              waiting.then(
                () => socket.resume(),
                (error: Error) => finish?.(error),
              );
            }
          };
          socket.once('end', () => {
            if (length === undefined || received >= length) finish?.();
            else finish?.(new Error(`the body ended at ${received} of ${length} bytes`));
          });
          const first = early ?? Buffer.alloc(0);
          early = undefined;
          if (first.length > 0) onData(first);
          if (length === 0) finish?.();
          socket.resume();
        });
      return {
        status,
        headers: responseHeaders,
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
    socket.on('close', () => fail(new Error('the connection closed')));
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
