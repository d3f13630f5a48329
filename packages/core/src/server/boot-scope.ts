/**
 * How far a boot token reaches (docs/server.md, Network boot): the plan of its own system, the
 * documents and files of that system's image, the blobs of its disks, and events about that
 * system. Each is a Route.boot check; route-table.ts refuses a boot token on every other route.
 */
import { loadImage } from '../store/images.ts';
import { parseImageRef } from '../store/releases.ts';
import type { RouteContext, SystemRef } from './route-context.ts';
import { bootRefused, type Route, type RouteRequest } from './route-table.ts';

export interface BootScopes {
  /** GET /v1/plan: `system` must be the token's (by name, MAC or hostname), `image` its image */
  plan: NonNullable<Route['boot']>;
  /** /v1/images/:image…: the token's system's image (any release of it); a kickstart's `system` its own */
  image: NonNullable<Route['boot']>;
  /** /v1/blobs/sha256/:hex: a disk of the image the system's reference resolves to now */
  blob: NonNullable<Route['boot']>;
  /** POST /v1/events: an event about the token's system */
  event: NonNullable<Route['boot']>;
}

export function bootScopes(ctx: RouteContext): BootScopes {
  async function own(request: RouteRequest): Promise<SystemRef> {
    await ctx.watch.settled();
    return ctx.lookupSystem(request.bootSystem!);
  }

  /** Refuses `key` (a `system` query value) unless it names the token's system. */
  async function sameSystem(request: RouteRequest, key: string | null): Promise<void> {
    if (key === null) return;
    if ((await ctx.lookupSystem(key)).name !== request.bootSystem)
      throw bootRefused(request.bootSystem!);
  }

  return {
    async plan(request) {
      const system = await own(request);
      const key = request.query.get('system');
      const image = request.query.get('image');
      if (key === null || (image !== null && image !== system.image))
        throw bootRefused(system.name);
      await sameSystem(request, key);
    },
    async image(request, match) {
      const system = await own(request);
      if (parseImageRef(match.param('image')).name !== parseImageRef(system.image).name)
        throw bootRefused(system.name);
      await sameSystem(request, request.query.get('system'));
    },
    async blob(request, match) {
      const system = await own(request);
      const ref = await ctx.imageRef(system.image);
      const image = await loadImage(ref.root, ref.name);
      if (!image.disks.some((disk) => disk.sha256 === match.param('hex')))
        throw bootRefused(system.name);
    },
    async event(request) {
      const body = request.body as { system?: unknown } | undefined;
      if (body?.system !== request.bootSystem) throw bootRefused(request.bootSystem!);
    },
  };
}
