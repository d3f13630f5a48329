/**
 * A pass-through HTTP proxy in front of a real `imgctl serve` that holds the agent still at a
 * chosen point until `release()`: a blob download once it has passed on `stallAfter` bytes, or
 * a request `hold` picks before it is forwarded. A test that must act at that point (send a
 * signal, kill the server, claim the target) then does so while the agent is certainly there,
 * instead of racing a transfer that takes a tenth of a second over loopback.
 */
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StallProxy {
  url: string;
  /** resolves once the agent is held */
  stalled: Promise<void>;
  /** lets what is held, and everything after, go on */
  release(): void;
  close(): Promise<void>;
}

export interface StallOptions {
  /** hold a blob download after this many bytes of its body */
  stallAfter?: number;
  /** hold the requests this picks, before they reach the server */
  hold?: (method: string, url: string) => boolean;
}

export async function startStallProxy(
  upstream: string,
  options: StallOptions,
): Promise<StallProxy> {
  const target = new URL(upstream);
  let released = false;
  const waiting: Array<() => void> = [];
  let onStall!: () => void;
  const stalled = new Promise<void>((resolve) => (onStall = resolve));
  const holdUntilReleased = (resume: () => void) => {
    waiting.push(resume);
    onStall();
  };

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const out = request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        // The agent gone (killed): stop reading from the server too.
        res.on('error', () => undefined);
        res.on('close', () => {
          if (!res.writableFinished) upstreamRes.destroy();
        });
        const isBlob = req.url?.startsWith('/v1/blobs/') ?? false;
        let passed = 0;
        let holding = false;
        upstreamRes.on('data', (chunk: Buffer) => {
          // Read from the server only as fast as the agent takes it, so `passed` is (within
          // socket buffers) what the agent has received.
          if (!res.write(chunk)) {
            upstreamRes.pause();
            res.once('drain', () => {
              if (!holding) upstreamRes.resume();
            });
          }
          passed += chunk.length;
          const after = options.stallAfter;
          if (isBlob && !released && !holding && after !== undefined && passed >= after) {
            holding = true;
            upstreamRes.pause();
            holdUntilReleased(() => {
              holding = false;
              upstreamRes.resume();
            });
          }
        });
        upstreamRes.on('end', () => res.end());
        // The server gone mid-response: the agent's connection breaks as it would without us.
        upstreamRes.on('error', () => undefined);
        upstreamRes.on('close', () => {
          if (!upstreamRes.complete) res.destroy();
        });
      },
    );
    out.on('error', () => res.destroy());
    req.on('error', () => out.destroy());
    req.pipe(out);
  };

  const server = createServer((req, res) => {
    if (!released && options.hold?.(req.method ?? '', req.url ?? '')) {
      req.pause();
      holdUntilReleased(() => forward(req, res));
    } else forward(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stalled,
    release() {
      released = true;
      for (const resume of waiting.splice(0)) resume();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
