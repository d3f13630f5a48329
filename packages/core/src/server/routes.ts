/**
 * The routes of `imgctl serve` (docs/server.md), one table. Each route answers from the store as
 * it is on disk now and returns a reply for server.ts to send (blobs stream themselves). Every
 * name is checked with names.ts before it touches a path.
 */
import { blobRoutes } from './blob-routes.ts';
import { bootRoutes } from './boot-routes.ts';
import { eventRoutes } from './event-routes.ts';
import { planRoutes } from './plan-routes.ts';
import {
  createRouteContext,
  type RouteContext,
  type RouteContextOptions,
} from './route-context.ts';
import { json, queryOf } from './route-helpers.ts';
import { createRouter, type Route, type Router } from './route-table.ts';
import { imageRoutes, systemRoutes } from './store-routes.ts';

export interface Routes extends Router {
  /** the system a live boot token was issued for; undefined for any other token */
  bootSystemOf(token: string): string | undefined;
  /** stops watching the store */
  close(): void;
}

export function createRoutes(
  storeDir: string,
  now: () => Date,
  log: (line: string) => void = () => undefined,
  options: RouteContextOptions = {},
): Routes {
  const ctx = createRouteContext(storeDir, now, log, options);
  return {
    ...createRouter(routeTable(ctx)),
    bootSystemOf: (token) => ctx.bootTokens.systemOf(token),
    close: ctx.close,
  };
}

/** Every route, in the order they are tried: within a resource, a longer path first. */
function routeTable(ctx: RouteContext): Route[] {
  return [
    ...serverRoutes(ctx),
    ...imageRoutes(ctx),
    ...systemRoutes(ctx),
    ...planRoutes(ctx),
    ...blobRoutes(ctx),
    ...eventRoutes(ctx),
    ...bootRoutes(ctx),
  ];
}

/** GET / and GET /v1: the store's name and the key plans are signed with. */
function serverRoutes(ctx: RouteContext): Route[] {
  const handle: Route['handle'] = async (request) => {
    queryOf(request.query, []);
    await ctx.watch.settled();
    const sign = await ctx.signer();
    const config = await ctx.storeConfig();
    return json(200, {
      apiVersion: 'imgctl/v1',
      kind: 'Server',
      store: config?.name ?? '',
      signing: sign
        ? { algorithm: 'ed25519', key_id: sign.keyId, public_key: sign.publicKeyPem }
        : null,
    });
  };
  return [
    { method: 'GET', path: '/', handle },
    { method: 'GET', path: '/v1', handle },
  ];
}
