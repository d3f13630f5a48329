/**
 * GET /v1/images[/{image}[/records[/{record}]]] and /v1/systems[/{system}]: the store's
 * documents as `imgctl … list/show --json` prints them, secrets redacted (plan/redact.ts); an
 * image's files are file-routes.ts's.
 */
import { join } from 'node:path';
import { printable } from '../util/names.ts';
import { showSystemRedacted, showImageRedacted, showRecordRedacted } from '../plan/redact.ts';
import { listImages } from '../store/images.ts';
import { listRecords } from '../store/records.ts';
import { listSystems } from '../store/systems.ts';
import { bootScopes } from './boot-scope.ts';
import { HttpError, lstatInStore, symlinkedEntries } from './files.ts';
import { type RouteContext, SYSTEM_KEY } from './route-context.ts';
import { json, listDir, queryOf, segmentName } from './route-helpers.ts';
import { fileRoutes } from './file-routes.ts';
import { notFoundBelow, type Route, type RouteRequest } from './route-table.ts';

export function imageRoutes(ctx: RouteContext): Route[] {
  const { storeDir } = ctx;
  /** The image named by the path, once its records' routes have checked the query and it. */
  function recordsOf(request: RouteRequest, name: string): string {
    const image = segmentName('image', name);
    queryOf(request.query, []);
    lstatInStore(storeDir, ['images', image, 'image.yaml']);
    return image;
  }
  const boot = bootScopes(ctx).image;

  return [
    {
      method: 'GET',
      path: '/v1/images',
      async handle(request) {
        queryOf(request.query, []);
        const hidden = new Set<string>();
        const images = await listImages(storeDir);
        for (const img of images) {
          try {
            lstatInStore(storeDir, ['images', img.name, 'image.yaml']);
            lstatInStore(storeDir, ['images', img.name, 'records']);
          } catch {
            hidden.add(img.name);
          }
        }
        return json(
          200,
          images.filter((i) => !hidden.has(i.name)),
        );
      },
    },
    {
      method: 'GET',
      path: '/v1/images/:image',
      boot,
      async handle(request, match) {
        queryOf(request.query, []);
        await ctx.watch.settled();
        // a release (web@3, web@stable) is shown from its frozen copy
        const ref = await ctx.imageRef(match.param('image'));
        return json(200, await showImageRedacted(join(storeDir, ...ref.base), ref.name));
      },
    },
    {
      method: 'GET',
      path: '/v1/images/:image/records',
      boot,
      async handle(request, match) {
        const image = recordsOf(request, match.param('image'));
        for (const name of listDir(join(storeDir, 'images', image, 'records'))) {
          if (name.endsWith('.yaml')) lstatInStore(storeDir, ['images', image, 'records', name]);
        }
        return json(200, await listRecords(storeDir, image));
      },
    },
    {
      method: 'GET',
      path: '/v1/images/:image/records/:record',
      boot,
      async handle(request, match) {
        const image = recordsOf(request, match.param('image'));
        const record = segmentName('record', match.param('record'));
        lstatInStore(storeDir, ['images', image, 'records', `${record}.yaml`]);
        return json(200, await showRecordRedacted(storeDir, image, record));
      },
    },
    ...fileRoutes(ctx),
    notFoundBelow('/v1/images/:image/records/:record', (request, match) => {
      recordsOf(request, match.param('image'));
    }),
    notFoundBelow('/v1/images/:image', (_request, match) => {
      segmentName('image', match.param('image'));
    }),
  ];
}

export function systemRoutes(ctx: RouteContext): Route[] {
  const { storeDir } = ctx;
  return [
    {
      method: 'GET',
      path: '/v1/systems',
      async handle(request) {
        const q = queryOf(request.query, ['mac', 'hostname']);
        const mac = q.one('mac');
        const hostname = q.one('hostname');
        if (mac !== undefined && hostname !== undefined)
          throw new HttpError(400, 'USAGE', 'give mac= or hostname=, not both');
        const key = mac ?? hostname;
        if (key !== undefined) {
          if (mac !== undefined && !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac))
            throw new HttpError(400, 'USAGE', `invalid MAC address '${printable(mac)}'`);
          if (
            hostname !== undefined &&
            (!SYSTEM_KEY.test(hostname) || hostname.includes('..') || hostname.includes(':'))
          )
            throw new HttpError(400, 'USAGE', `invalid hostname '${printable(hostname)}'`);
          await ctx.watch.settled();
          const { name } = await ctx.lookupSystem(key);
          return json(200, await showSystemRedacted(storeDir, name));
        }
        const hidden = symlinkedEntries(storeDir, ['systems']);
        if (lstatInStore(storeDir, ['systems']) === undefined) return json(200, []);
        return json(
          200,
          (await listSystems(storeDir)).filter((sys) => !hidden.has(`${sys.name}.yaml`)),
        );
      },
    },
    {
      method: 'GET',
      path: '/v1/systems/:system',
      async handle(request, match) {
        queryOf(request.query, []);
        const name = segmentName('system', match.param('system'));
        if (!lstatInStore(storeDir, ['systems', `${name}.yaml`]))
          throw new HttpError(404, 'NOT_FOUND', `system '${name}' does not exist`);
        return json(200, await showSystemRedacted(storeDir, name));
      },
    },
    notFoundBelow('/v1/systems/:system'),
  ];
}
