/**
 * A fault injector between imgctl and a real registry: a plain-HTTP reverse proxy on
 * 127.0.0.1 that forwards every request to the registry (test/helpers/registry.ts) unless a
 * rule answers it instead — a 500, a redirect, a body of its own. It is not a registry: what no
 * rule takes is the real registry's answer, byte for byte.
 */
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

/** Answers a request itself (returns true) or lets it through (false). */
export type ProxyRule = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface RegistryProxy {
  /** `127.0.0.1:PORT`, for `oci://` references with --insecure-http */
  url: string;
  /** the rules, tried in order; tests replace them */
  rules: ProxyRule[];
  /** every request seen: `METHOD PATH` */
  seen: string[];
  close(): Promise<void>;
}

/** Forwards `req` to the plain-HTTP registry at `target` (`HOST:PORT`), `extra` headers added. */
function forward(
  target: string,
  req: IncomingMessage,
  res: ServerResponse,
  extra: IncomingHttpHeaders = {},
): void {
  const [host, port] = target.split(':');
  const headers: IncomingHttpHeaders = { ...req.headers, ...extra, host: target };
  const upstream = request(
    { host, port: Number(port), method: req.method, path: req.url, headers },
    (answer) => {
      const out = { ...answer.headers };
      // a Location naming the registry points back through the proxy
      if (typeof out.location === 'string')
        out.location = out.location.replace(`http://${target}`, `http://${req.headers.host}`);
      res.writeHead(answer.statusCode ?? 502, out);
      answer.pipe(res);
    },
  );
  upstream.on('error', () => res.destroy());
  req.pipe(upstream);
}

async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((done) => server.listen(0, host, done));
  return (server.address() as AddressInfo).port;
}

export async function startRegistryProxy(target: string): Promise<RegistryProxy> {
  const proxy: RegistryProxy = {
    url: '',
    rules: [],
    seen: [],
    close: () => new Promise((done) => server.close(() => done())),
  };
  const server = createServer((req, res) => {
    proxy.seen.push(`${req.method} ${req.url}`);
    if (proxy.rules.some((rule) => rule(req, res))) {
      req.resume();
      return;
    }
    forward(target, req, res);
  });
  server.keepAliveTimeout = 1000;
  proxy.url = `127.0.0.1:${await listen(server, '127.0.0.1')}`;
  return proxy;
}

/**
 * A listener on another origin (`localhost:PORT`, where the proxy is `127.0.0.1`): the blob
 * storage a registry redirects to, which trusts the URL, not the client's credentials. It
 * records each request's headers and forwards it to the registry with `authorization` of its
 * own.
 */
export async function startOtherOrigin(
  target: string,
  authorization: string,
): Promise<{ origin: string; requests: IncomingHttpHeaders[]; close(): Promise<void> }> {
  const requests: IncomingHttpHeaders[] = [];
  const server = createServer((req, res) => {
    requests.push({ ...req.headers });
    forward(target, req, res, { authorization });
  });
  // bound to the address the client's lookup of `localhost` finds too
  const port = await listen(server, 'localhost');
  return {
    origin: `http://localhost:${port}`,
    requests,
    close: () => new Promise((done) => server.close(() => done())),
  };
}

/** A rule: the first `times` requests that `match` get `status`. */
export function failFirst(
  times: number,
  match: (req: IncomingMessage) => boolean,
  status = 500,
): ProxyRule {
  let left = times;
  return (req, res) => {
    if (left === 0 || !match(req)) return false;
    left -= 1;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end('{"errors":[{"code":"UNKNOWN","message":"injected by the test proxy"}]}');
    return true;
  };
}
