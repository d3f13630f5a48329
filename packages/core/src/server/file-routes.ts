/**
 * GET /v1/images/{image}/files/{path}: an image's provisioning files (docs/server.md, Files) —
 * its kickstart rendered for a plan, its provision script, the store's common scripts and its
 * custom script sets. {image} may be a release or a channel (web@3, web@stable): the files are
 * then the release's frozen copies.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { printable } from '../util/names.ts';
import { renderImageFile } from '../plan/image-files.ts';
import { redactPlan, resolvePlan } from '../plan/plan.ts';
import { loadImage } from '../store/images.ts';
import { bootScopes } from './boot-scope.ts';
import { fileInStore, HttpError, lstatInStore, symlinkedEntries } from './files.ts';
import type { RouteContext, ServedImage } from './route-context.ts';
import { json, listDir, noStore, queryOf, sha256 } from './route-helpers.ts';
import type { Reply, Route, RouteRequest } from './route-table.ts';

const MAX_SCRIPT_BYTES = 16 * 1024 * 1024;
/** a script's file name: like a name, capitals allowed */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function fileRoutes(ctx: RouteContext): Route[] {
  const { storeDir } = ctx;

  async function file(request: RouteRequest, imageRef: string, path: string[]): Promise<Reply> {
    await ctx.watch.settled();
    const ref = await ctx.imageRef(imageRef);
    const image = ref.name;
    /** where the image's tree is: the store, or the release's copy */
    const base = ref.base;
    const shown = (segments: string[]) => [...base, ...segments].join('/');
    const img = await loadImage(join(storeDir, ...base), image);
    if (path.length === 1 && path[0] === 'kickstart') return kickstart(request, ref);
    queryOf(request.query, []);
    for (const segment of path) {
      if (!FILE_NAME.test(segment) || segment.includes('..'))
        throw new HttpError(400, 'USAGE', `invalid file name '${printable(segment)}'`);
    }
    const script = img.provision?.script ?? 'provision.sh';
    if (path.join('/') === script) {
      const segments = ['images', image, ...path];
      return scriptReply([...base, ...segments], shown(segments));
    }
    if (path[0] === 'common' && path.length === 2) {
      return scriptReply([...base, 'common', path[1]!], shown(['common', path[1]!]));
    }
    if (path[0] === 'custom_scripts' && (path.length === 2 || path.length === 3)) {
      const set = path[1]!;
      if (!(img.provision?.custom_scripts ?? []).includes(set)) {
        throw new HttpError(
          404,
          'NOT_FOUND',
          `image '${ref.ref}' uses no custom script set '${printable(set)}'`,
          { hint: `its sets: ${(img.provision?.custom_scripts ?? []).join(', ') || 'none'}` },
        );
      }
      const dir = customScriptsDir(base, image, set);
      if (path.length === 2) {
        const names = listDir(join(storeDir, ...dir)).sort();
        const skipped = symlinkedEntries(storeDir, dir);
        const files = names
          .filter(
            (n) =>
              FILE_NAME.test(n) && !skipped.has(n) && lstatInStore(storeDir, [...dir, n])?.isFile(),
          )
          .map((n) => {
            const content = readFileSync(join(storeDir, ...dir, n));
            return { name: n, size: content.length, sha256: sha256(content) };
          });
        return json(
          200,
          { image, set, source: dir[base.length] === 'images' ? 'image' : 'store', files },
          noStore,
        );
      }
      return scriptReply([...dir, path[2]!], `${dir.join('/')}/${path[2]}`);
    }
    throw new HttpError(
      404,
      'NOT_FOUND',
      `image '${ref.ref}' has no file '${printable(path.join('/'))}'`,
      {
        hint: `files: ${script}, kickstart, custom_scripts/SET[/FILE], common/FILE`,
      },
    );
  }

  /** The image's kickstart, rendered for the plan the query asks for (redacted without a token). */
  async function kickstart(request: RouteRequest, ref: ServedImage): Promise<Reply> {
    const q = queryOf(request.query, ['record', 'system', 'vm_name', 'set']);
    const systemKey = q.one('system');
    const system = systemKey === undefined ? undefined : (await ctx.lookupSystem(systemKey)).name;
    const resolved = await resolvePlan(storeDir, {
      image: ref.ref,
      resolved: ref,
      record: q.name('record', 'record'),
      system,
      sets: q.all('set'),
      vmName: q.name('vm_name', 'VM'),
    });
    if (resolved.provision.kickstart !== undefined) {
      lstatInStore(storeDir, [
        ...ref.base,
        'images',
        ref.name,
        ...resolved.provision.kickstart.split('/'),
      ]);
    }
    const text = await renderImageFile(
      storeDir,
      request.authed ? resolved : redactPlan(resolved),
      'kickstart',
    );
    return { status: 200, body: text, type: 'text/plain; charset=utf-8', headers: noStore };
  }

  /** The image's own custom_scripts/<set>/ when it exists, else the store's (in `base`'s tree). */
  function customScriptsDir(base: string[], image: string, set: string): string[] {
    const own = [...base, 'images', image, 'custom_scripts', set];
    if (lstatInStore(storeDir, own)?.isDirectory()) return own;
    const shared = [...base, 'custom_scripts', set];
    if (lstatInStore(storeDir, shared)?.isDirectory()) return shared;
    throw new HttpError(
      404,
      'NOT_FOUND',
      `custom script set '${set}' is in neither images/${image}/custom_scripts/ nor custom_scripts/`,
    );
  }

  function scriptReply(segments: string[], display: string): Reply {
    const path = fileInStore(storeDir, segments, display);
    const content = readFileSync(path);
    if (content.length > MAX_SCRIPT_BYTES)
      throw new HttpError(500, 'FAILED', `${display} is larger than ${MAX_SCRIPT_BYTES} bytes`);
    return {
      status: 200,
      body: content,
      type: 'text/plain; charset=utf-8',
      headers: { etag: `"${sha256(content)}"`, 'cache-control': 'no-cache' },
    };
  }

  return [
    {
      method: 'GET',
      path: '/v1/images/:image/files/*path',
      boot: bootScopes(ctx).image,
      async handle(request, match) {
        return file(request, match.param('image'), match.rest);
      },
    },
  ];
}
