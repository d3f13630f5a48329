/**
 * GET /v1/blobs/sha256/{hex}: disk contents, streamed with Range support (docs/server.md,
 * Blobs); 410 Gone for a blob only revoked releases name.
 */
import { printable } from '../util/names.ts';
import { SHA256_HEX } from '../store/store.ts';
import { bootScopes } from './boot-scope.ts';
import { HttpError, sendBlob } from './files.ts';
import type { RouteContext } from './route-context.ts';
import { queryOf } from './route-helpers.ts';
import { notFoundBelow, type Route } from './route-table.ts';

export function blobRoutes(ctx: RouteContext): Route[] {
  const { storeDir } = ctx;
  return [
    {
      method: 'GET',
      path: '/v1/blobs/sha256/:hex',
      boot: bootScopes(ctx).blob,
      async handle(request, match) {
        queryOf(request.query, []);
        const hex = match.param('hex');
        if (!SHA256_HEX.test(hex))
          throw new HttpError(
            400,
            'USAGE',
            `invalid sha256 '${printable(hex)}': 64 lowercase hex digits`,
          );
        await ctx.watch.settled();
        const withdrawn = (await ctx.withdrawnBlobs()).get(hex);
        if (withdrawn !== undefined)
          throw new HttpError(410, 'INTEGRITY', `blob ${hex} belongs only to ${withdrawn}`, {
            hint: 'a revoked release is not served; provision another release',
          });
        const bytes = await sendBlob(request.req, request.res, storeDir, hex);
        return { streamed: true, bytes };
      },
    },
    notFoundBelow('/v1/blobs/sha256/:hex'),
  ];
}
