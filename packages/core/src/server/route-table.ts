/**
 * The routes of `imgctl serve` as a table: each entry is a method, a path pattern and a handler.
 * Which route answers a request, and which methods a path accepts (a 405's `Allow`), are both
 * read from the table.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { printable } from '../util/names.ts';
import { HttpError } from './files.ts';

export interface RouteRequest {
  method: string;
  /** decoded path segments after the leading slash */
  segments: string[];
  query: URLSearchParams;
  /**
   * the request carried a configured token (read or write) or a boot token: plans include
   * secret values
   */
  authed: boolean;
  /** the system of the boot token the request carried (boot-tokens.ts): it may reach no further */
  bootSystem?: string;
  req: IncomingMessage;
  res: ServerResponse;
  /** the parsed JSON body of a POST */
  body?: unknown;
}

export type Reply =
  | { status: number; body: string | Buffer; type: string; headers?: Record<string, string> }
  /** the route wrote the response itself; `bytes` of body were sent */
  | { streamed: true; bytes: number };

/** The parts of the path a pattern's `:name` and `*name` matched. */
export interface RouteMatch {
  /** the segment `:name` matched */
  param(name: string): string;
  /** the segments `*name` matched, one or more; empty for a pattern without one */
  rest: string[];
}

export interface Route {
  /** GET routes answer HEAD too */
  method: 'GET' | 'POST';
  /**
   * `/v1/images/:image/files/*path`: literal segments, `:name` for any one segment (checked by
   * the handler), `*name` last for one or more segments
   */
  path: string;
  handle(request: RouteRequest, match: RouteMatch): Promise<Reply>;
  /** answered without a token even when the server needs one for reads (what iPXE fetches) */
  open?: boolean;
  /**
   * Whether a boot token of `request.bootSystem` reaches this route: throws (403) when the
   * request goes beyond that system's own plan, files, blobs or events. A route without one
   * refuses boot tokens, unless it is open.
   */
  boot?: (request: RouteRequest, match: RouteMatch) => Promise<void>;
}

export interface Router {
  /** the first route of the table whose method and pattern fit; 404 when none does */
  handle(request: RouteRequest): Promise<Reply>;
  /** the methods the routes matching a path take, for 405 answers; empty when none matches */
  methodsFor(segments: string[]): string[];
  /** whether the route a request for `segments` would reach is open (Route.open) */
  isOpen(method: string, segments: string[]): boolean;
}

export function createRouter(routes: readonly Route[]): Router {
  const table = routes.map((route) => ({
    route,
    pattern: route.path === '/' ? [] : route.path.slice(1).split('/'),
  }));
  const find = (requestMethod: string, segments: string[]) => {
    const method = requestMethod === 'HEAD' ? 'GET' : requestMethod;
    for (const { route, pattern } of table) {
      if (route.method !== method) continue;
      const match = matchPattern(pattern, segments);
      if (match) return { route, match };
    }
    return undefined;
  };
  return {
    async handle(request) {
      const found = find(request.method, request.segments);
      if (!found) throw notFound(request.segments);
      const { route, match } = found;
      if (request.bootSystem !== undefined && !route.open) {
        if (!route.boot) throw bootRefused(request.bootSystem);
        await route.boot(request, match);
      }
      return route.handle(request, match);
    },
    isOpen(method, segments) {
      return find(method, segments)?.route.open === true;
    },
    methodsFor(segments) {
      const methods = new Set<string>();
      for (const { route, pattern } of table) {
        if (!matchPattern(pattern, segments)) continue;
        methods.add(route.method);
        if (route.method === 'GET') methods.add('HEAD');
      }
      return [...methods];
    },
  };
}

function matchPattern(
  pattern: readonly string[],
  segments: readonly string[],
): RouteMatch | undefined {
  const params = new Map<string, string>();
  let rest: string[] = [];
  for (const [i, part] of pattern.entries()) {
    if (part.startsWith('*')) {
      if (segments.length <= i) return undefined;
      rest = segments.slice(i);
      break;
    }
    const segment = segments[i];
    if (segment === undefined) return undefined;
    if (part.startsWith(':')) params.set(part.slice(1), segment);
    else if (part !== segment) return undefined;
  }
  if (rest.length === 0 && segments.length !== pattern.length) return undefined;
  return {
    param(name) {
      const value = params.get(name);
      if (value === undefined) throw new Error(`the route's pattern has no :${name}`);
      return value;
    },
    rest,
  };
}

/**
 * The paths below `path`: GET (and HEAD) answered 404 once `check` has looked at the part of the
 * path they extend; other methods 405, as the resource's own.
 */
export function notFoundBelow(
  path: string,
  check: (request: RouteRequest, match: RouteMatch) => void = () => undefined,
): Route {
  return {
    method: 'GET',
    path: `${path}/*rest`,
    async handle(request, match) {
      check(request, match);
      throw notFound(request.segments);
    },
  };
}

/** 403 for a boot token used beyond its system. */
export function bootRefused(system: string): HttpError {
  return new HttpError(
    403,
    'USAGE',
    `a boot token reaches only the plan, image files, blobs and events of its system (${system})`,
    { headers: { 'www-authenticate': 'Bearer realm="imgctl", error="insufficient_scope"' } },
  );
}

function notFound(segments: string[]): HttpError {
  return new HttpError(404, 'NOT_FOUND', `no such route /${printable(segments.join('/'))}`, {
    hint: 'docs/server.md lists every route',
  });
}
