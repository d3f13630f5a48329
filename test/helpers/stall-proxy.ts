/**
 * A pass-through HTTP proxy in front of a real `imgctl serve` that holds a blob download still
 * once it has passed on `stallAfter` bytes, until `release()`. A test that must interrupt an
 * agent mid-download (a signal, the server killed) then acts while the download is certainly
 * under way, instead of racing a transfer that takes a tenth of a second over loopback.
 */
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StallProxy {
  url: string;
  /** resolves once a blob response has passed on `stallAfter` bytes and is held */
  stalled: Promise<void>;
  /** lets held and later transfers go on */
  release(): void;
  close(): Promise<void>;
}

export async function startStallProxy(upstream: string, stallAfter: number): Promise<StallProxy> {
  const target = new URL(upstream);
  let released = false;
  const waiting: Array<() => void> = [];
  let onStall!: () => void;
  const stalled = new Promise<void>((resolve) => (onStall = resolve));

  const server = createServer((req, res) => {
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
        upstreamRes.on('data', (chunk: Buffer) => {
          res.write(chunk);
          passed += chunk.length;
          if (isBlob && !released && passed >= stallAfter) {
            upstreamRes.pause();
            waiting.push(() => upstreamRes.resume());
            onStall();
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
