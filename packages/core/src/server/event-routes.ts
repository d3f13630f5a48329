/** POST /v1/events and GET /v1/status (docs/server.md, Events and status). */
import { appendEvent, DEFAULT_STALLED_AFTER_MS, parseEvent, provisioningStatus } from './events.ts';
import type { RouteContext } from './route-context.ts';
import { parseDuration } from '../util/duration.ts';
import { json, noStore, queryOf } from './route-helpers.ts';
import { notFoundBelow, type Route } from './route-table.ts';

export function eventRoutes({ storeDir, now }: RouteContext): Route[] {
  return [
    {
      method: 'POST',
      path: '/v1/events',
      async handle(request) {
        queryOf(request.query, []);
        const event = parseEvent(request.body, now());
        await appendEvent(storeDir, event);
        return json(201, { event });
      },
    },
    {
      method: 'GET',
      path: '/v1/status',
      async handle(request) {
        const q = queryOf(request.query, ['system', 'stalled_after']);
        const stalled = q.one('stalled_after');
        return json(
          200,
          await provisioningStatus(storeDir, {
            system: q.name('system', 'system'),
            now: now(),
            stalledAfterMs:
              stalled === undefined
                ? DEFAULT_STALLED_AFTER_MS
                : parseDuration(stalled, 'stalled_after'),
          }),
          noStore,
        );
      },
    },
    notFoundBelow('/v1/status'),
  ];
}
