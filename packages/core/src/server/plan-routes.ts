/** GET /v1/plan: the resolved plan (docs/server.md, Plans), signed when the store has a key. */
import { join } from 'node:path';
import { redactPlan, resolvePlan } from '../plan/plan.ts';
import {
  canonicalJson,
  formatSignatureHeader,
  signPlan,
  SIGNATURE_HEADER,
  type SignedPlan,
} from '../plan/signing.ts';
import type { PlanDoc } from '../store/types.ts';
import { bootScopes } from './boot-scope.ts';
import { HttpError, lstatInStore } from './files.ts';
import { type Kept, kept, type RouteContext, type ServedImage } from './route-context.ts';
import { json, listDir, queryOf } from './route-helpers.ts';
import { notFoundBelow, type Route, type RouteRequest, type Reply } from './route-table.ts';

interface ResolvedPlan {
  plan: PlanDoc;
  /** the plan as served: JSON, 2-space indent, final newline */
  body: Buffer;
  /** canonicalJson(plan), what each request's signature is made over */
  canonical: string;
}

export function planRoutes(ctx: RouteContext): Route[] {
  const { storeDir, watch, dirs } = ctx;
  /** resolved plans by query, kept while what they were resolved from is unchanged */
  const planCache = new Map<string, Kept<Promise<ResolvedPlan>>>();

  async function plan(request: RouteRequest): Promise<Reply> {
    const q = queryOf(request.query, ['image', 'record', 'system', 'vm_name', 'set', 'format']);
    const format = q.one('format') ?? 'plan';
    if (format !== 'plan' && format !== 'signed')
      throw new HttpError(400, 'USAGE', "format is 'plan' (the default) or 'signed'");
    const systemKey = q.one('system');
    let image = q.one('image');
    const record = q.name('record', 'record');
    const vmName = q.name('vm_name', 'VM');
    const sets = q.all('set');
    if (image === undefined && systemKey === undefined)
      throw new HttpError(
        400,
        'USAGE',
        'the plan needs image=NAME[@REV|@CHANNEL] or system=NAME|MAC|HOSTNAME',
      );
    await watch.settled();
    let system: string | undefined;
    if (systemKey !== undefined) {
      const found = await ctx.lookupSystem(systemKey);
      system = found.name;
      image ??= found.image;
    }
    const sign = await ctx.signer();
    const ref = await ctx.imageRef(image!);
    const stamp = watch.stamp([
      storeDir,
      dirs.images,
      ...ctx.imageDirs(ref.name),
      ...(system === undefined ? [] : [dirs.systems]),
    ]);
    const key = JSON.stringify([image, record, system, vmName, sets, request.authed]);
    const result = kept(planCache, key, stamp, () =>
      resolveServed(ref, { record, system, sets, vmName }, request.authed),
    );
    const { plan: shown, body, canonical } = await result;
    // signed per request: a signature is valid from now for the store's signature_ttl
    const signature =
      sign && signPlan(shown, sign.key, { now: ctx.now(), ttlSeconds: sign.ttlSeconds }, canonical);
    const headers: Record<string, string> = { 'cache-control': 'no-store', vary: 'authorization' };
    if (signature) headers[SIGNATURE_HEADER] = formatSignatureHeader(signature);
    if (format === 'signed') {
      if (!signature) {
        throw new HttpError(
          404,
          'NOT_FOUND',
          'the store has no signing key, so plans are not signed',
          {
            hint: "make one with 'imgctl keygen' on the server",
          },
        );
      }
      const envelope: SignedPlan = {
        apiVersion: 'imgctl/v1',
        kind: 'SignedPlan',
        plan: shown,
        signature,
      };
      return json(200, envelope, headers);
    }
    return { status: 200, body, type: 'application/json', headers };
  }

  /** The plan as served (redacted unless `authed`), refusing a symlink on the way to any file. */
  async function resolveServed(
    ref: ServedImage,
    options: { record?: string; system?: string; sets: string[]; vmName?: string },
    authed: boolean,
  ): Promise<ResolvedPlan> {
    const image = [...ref.base, 'images', ref.name];
    const deps = [['store.yaml'], [...image, 'image.yaml'], [...image, 'records']];
    if (options.system !== undefined) deps.push(['systems', `${options.system}.yaml`]);
    for (const segments of deps) lstatInStore(storeDir, segments);
    // The plan reads whichever record applies, which only resolution knows: all are checked.
    const records = [...image, 'records'];
    for (const name of listDir(join(storeDir, ...records)))
      lstatInStore(storeDir, [...records, name]);
    const resolved = await resolvePlan(storeDir, { image: ref.ref, resolved: ref, ...options });
    const shown = authed ? resolved : redactPlan(resolved);
    return {
      plan: shown,
      body: Buffer.from(`${JSON.stringify(shown, null, 2)}\n`),
      canonical: canonicalJson(shown),
    };
  }

  return [
    { method: 'GET', path: '/v1/plan', handle: plan, boot: bootScopes(ctx).plan },
    notFoundBelow('/v1/plan'),
  ];
}
