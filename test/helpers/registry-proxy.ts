/**
 * A fault injector between imgctl and a real registry: a reverse proxy on 127.0.0.1 that
 * forwards every request to the registry (test/helpers/registry.ts) unless a rule answers it
 * instead — a 500, a redirect, a body of its own. It is not a registry: what no rule takes is
 * the real registry's answer, byte for byte. With the registry's TLS files it speaks HTTPS with
 * the registry's own certificate (for 127.0.0.1 and localhost), as a TLS-terminating proxy in
 * front of a registry does, and checks the registry's certificate against its CA.
 */
import { readFile } from 'node:fs/promises';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as httpRequest,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TestRegistry } from './registry.ts';

/** Answers a request itself (returns true) or lets it through (false). */
export type ProxyRule = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface RegistryProxy {
  /** `127.0.0.1:PORT`, for `oci://` references (HTTPS when the registry has TLS) */
  url: string;
  /** the rules, tried in order; tests replace them */
  rules: ProxyRule[];
  /** every request seen: `METHOD PATH` */
  seen: string[];
  close(): Promise<void>;
}

/** A listener on another origin than the proxy's: blob storage, or where a bad redirect leads. */
export interface OtherOrigin {
  /** `https://localhost:PORT` (`http://` without TLS) */
  origin: string;
  /** the headers of every request it got */
  requests: IncomingHttpHeaders[];
  close(): Promise<void>;
}

interface Upstream {
  /** `HOST:PORT` */
  address: string;
  tls?: { cert: Buffer; key: Buffer; ca: Buffer };
}

async function upstreamOf(registry: TestRegistry): Promise<Upstream> {
  if (!registry.caFile) return { address: registry.url };
  const [cert, key, ca] = await Promise.all(
    [registry.certFile!, registry.keyFile!, registry.caFile].map((file) => readFile(file)),
  );
  return { address: registry.url, tls: { cert: cert!, key: key!, ca: ca! } };
}

/** Forwards `req` to the registry, `extra` headers added; its Locations point back at `self`. */
function forward(
  upstream: Upstream,
  req: IncomingMessage,
  res: ServerResponse,
  extra: IncomingHttpHeaders = {},
): void {
  const [host, port] = upstream.address.split(':');
  const scheme = upstream.tls ? 'https' : 'http';
  const headers: IncomingHttpHeaders = { ...req.headers, ...extra, host: upstream.address };
  const send = upstream.tls ? httpsRequest : httpRequest;
  const options = { host, port: Number(port), method: req.method, path: req.url, headers };
  const outgoing = send(upstream.tls ? { ...options, ca: upstream.tls.ca } : options, (answer) => {
    const out = { ...answer.headers };
    // a Location naming the registry points back through the proxy
    if (typeof out.location === 'string')
      out.location = out.location.replace(
        `${scheme}://${upstream.address}`,
        `${scheme}://${req.headers.host}`,
      );
    res.writeHead(answer.statusCode ?? 502, out);
    answer.pipe(res);
  });
  outgoing.on('error', () => res.destroy());
  req.pipe(outgoing);
}

async function listen(
  upstream: Upstream,
  host: string,
  handler: RequestListener,
): Promise<{ server: Server; origin: string; close(): Promise<void> }> {
  const server = upstream.tls
    ? createHttpsServer({ cert: upstream.tls.cert, key: upstream.tls.key }, handler)
    : createServer(handler);
  server.keepAliveTimeout = 1000;
  await new Promise<void>((done) => server.listen(0, host, done));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    origin: `${upstream.tls ? 'https' : 'http'}://${host}:${port}`,
    close: () =>
      new Promise((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

/** A proxy in front of `registry`, forwarding what no rule answers. */
export async function startRegistryProxy(registry: TestRegistry): Promise<RegistryProxy> {
  const upstream = await upstreamOf(registry);
  const proxy: RegistryProxy = { url: '', rules: [], seen: [], close: async () => undefined };
  const { origin, close } = await listen(upstream, '127.0.0.1', (req, res) => {
    proxy.seen.push(`${req.method} ${req.url}`);
    if (proxy.rules.some((rule) => rule(req, res))) {
      req.resume();
      return;
    }
    forward(upstream, req, res);
  });
  proxy.url = new URL(origin).host;
  proxy.close = close;
  return proxy;
}

/**
 * A listener on another origin (`localhost:PORT`, where the proxy is `127.0.0.1`): the blob
 * storage a registry redirects to, which trusts the URL, not the client's credentials. It
 * records each request's headers and forwards it to the registry with `authorization` of its
 * own.
 */
export async function startOtherOrigin(
  registry: TestRegistry,
  authorization: string,
): Promise<OtherOrigin> {
  const upstream = await upstreamOf(registry);
  const requests: IncomingHttpHeaders[] = [];
  // bound to the address the client's lookup of `localhost` finds too
  const { origin, close } = await listen(upstream, 'localhost', (req, res) => {
    requests.push({ ...req.headers });
    forward(upstream, req, res, { authorization });
  });
  return { origin, requests, close };
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

/** A rule: requests that `match` are sent (307) to the same path on `origin`. */
export function redirectTo(origin: string, match: (req: IncomingMessage) => boolean): ProxyRule {
  return (req, res) => {
    if (!match(req)) return false;
    res.writeHead(307, { location: `${origin}${req.url}` });
    res.end();
    return true;
  };
}

/** What a rule serving an endless body saw: bytes handed to the socket, and who ended it. */
export interface EndlessBody {
  sent: number;
  /** the client closed the connection before the body's end */
  cutByClient: boolean;
  /** resolves once the response is over, one way or the other */
  over: Promise<void>;
}

/**
 * A rule: requests that `match` get 200 and `total` bytes of spaces (at most; the client may
 * hang up first), with `headers` — a Content-Length, or none.
 */
export function serveBody(
  match: (req: IncomingMessage) => boolean,
  total: number,
  headers: Record<string, string>,
): { rule: ProxyRule; seen: EndlessBody[] } {
  const seen: EndlessBody[] = [];
  const piece = Buffer.alloc(64 * 1024, 0x20);
  const rule: ProxyRule = (req, res) => {
    if (!match(req)) return false;
    let finished = false;
    const body: EndlessBody = { sent: 0, cutByClient: false, over: Promise.resolve() };
    body.over = new Promise((done) =>
      res.once('close', () => {
        body.cutByClient = !finished;
        done();
      }),
    );
    seen.push(body);
    res.writeHead(200, headers);
    const write = () => {
      while (body.sent < total && !res.destroyed) {
        body.sent += piece.length;
        if (!res.write(piece)) return void res.once('drain', write);
      }
      if (res.destroyed) return;
      finished = true;
      res.end();
    };
    write();
    return true;
  };
  return { rule, seen };
}
