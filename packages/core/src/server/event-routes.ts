/** POST /v1/events and GET /v1/status (docs/server.md, Events and status). */
import {
  appendEvent,
  clearNetboot,
  DEFAULT_STALLED_AFTER_MS,
  parseEvent,
  provisioningStatus,
  systemFileDigest,
} from './events.ts';
import { bootScopes } from './boot-scope.ts';
import { lstatInStore } from './files.ts';
import type { RouteContext } from './route-context.ts';
import { parseDuration } from '../util/duration.ts';
import { errorText, json, noStore, queryOf } from './route-helpers.ts';
import { notFoundBelow, type Route } from './route-table.ts';

export function eventRoutes(ctx: RouteContext): Route[] {
  const { storeDir, now } = ctx;

  /**
   * A provisioned system network-boots the local disk from now on. When its file cannot be
   * edited (a read-only store, a file that no longer validates), the event still counts: the
   * log says why, and the server boots the system locally until its file changes.
   */
  async function endNetboot(system: string): Promise<void> {
    try {
      lstatInStore(storeDir, ['systems', `${system}.yaml`]);
      if (await clearNetboot(storeDir, system)) {
        ctx.netbootHeld.delete(system);
        ctx.log(`system ${system} posted done: netboot set to false in systems/${system}.yaml`);
      }
    } catch (error) {
      const digest = await systemFileDigest(storeDir, system);
      if (digest !== undefined) ctx.netbootHeld.set(system, digest);
      ctx.log(
        `system ${system} posted done, but netboot could not be set to false in systems/${system}.yaml: ${errorText(error)}; its network boots go to the local disk until that file changes`,
      );
    }
  }

  return [
    {
      method: 'POST',
      path: '/v1/events',
      boot: bootScopes(ctx).event,
      async handle(request) {
        queryOf(request.query, []);
        const event = parseEvent(request.body, now());
        await appendEvent(storeDir, event);
        if (event.phase === 'done' || event.phase === 'failed') ctx.bootTokens.end(event.system);
        if (event.phase === 'done') await endNetboot(event.system);
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
