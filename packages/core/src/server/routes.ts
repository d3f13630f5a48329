/**
 * The routes of `imgctl serve` (docs/server.md). Each takes the already decoded path segments and
 * query, answers from the store as it is on disk now, and returns a reply for server.ts to send
 * (blobs stream themselves). Every name is checked with names.ts before it touches a path.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import {
  appendEvent,
  DEFAULT_STALLED_AFTER_MS,
  parseDuration,
  parseEvent,
  provisioningStatus,
} from './events.ts';
import { listImages, loadImage, showImage } from '../store/images.ts';
import { isValidName, printable } from '../util/names.ts';
import { renderImageFile } from '../plan/image-files.ts';
import { redactPlan, resolvePlan } from '../plan/plan.ts';
import { parseYamlValue } from '../yaml/quick-yaml.ts';
import { listRecords, showRecord } from '../store/records.ts';
import { imageForDisplay, recordForDisplay, systemForDisplay } from '../plan/redact.ts';
import {
  fileInStore,
  HttpError,
  lstatInStore,
  sendBlob,
  symlinkedEntries,
  watchStore,
} from './files.ts';
import {
  formatSignatureHeader,
  keyIdOf,
  parsePrivateKey,
  type PlanSignature,
  signPlan,
  SIGNATURE_HEADER,
  type SignedPlan,
} from '../plan/signing.ts';
import { SHA256_HEX } from '../store/store.ts';
import { findSystem, listSystems, showSystem } from '../store/systems.ts';
import type { ImageStoreDoc, PlanDoc } from '../store/types.ts';

export interface RouteRequest {
  method: string;
  /** decoded path segments after the leading slash */
  segments: string[];
  query: URLSearchParams;
  /** the request carried a configured token (read or write): plans include secret values */
  authed: boolean;
  req: IncomingMessage;
  res: ServerResponse;
  /** the parsed JSON body of a POST */
  body?: unknown;
}

export type Reply =
  | { status: number; body: string | Buffer; type: string; headers?: Record<string, string> }
  /** the route wrote the response itself; `bytes` of body were sent */
  | { streamed: true; bytes: number };

export interface Routes {
  handle(request: RouteRequest): Promise<Reply>;
  /** the methods a path accepts, for 405 answers; empty when no route matches */
  methodsFor(segments: string[]): string[];
  /** stops watching the store */
  close(): void;
}

/** entries kept in each cache: plans by query, system look-ups by key */
const CACHE_SIZE = 512;
const MAX_SCRIPT_BYTES = 16 * 1024 * 1024;
/** a name, a MAC address or a hostname */
const SYSTEM_KEY = /^([0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))$/;
/** a script's file name: like a name, capitals allowed */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

interface Signer {
  key: KeyObject;
  keyId: string;
  publicKeyPem: string;
}

interface SystemRef {
  name: string;
  image: string;
}

interface ResolvedPlan {
  plan: PlanDoc;
  /** the plan as served: JSON, 2-space indent, final newline */
  body: Buffer;
  signature?: PlanSignature;
  /** the Imgctl-Signature header */
  signatureHeader?: string;
}

/** A value kept while the directories it was read from are unchanged (StoreWatch.stamp). */
interface Kept<T> {
  stamp: number;
  value: T;
}

export function createRoutes(
  storeDir: string,
  now: () => Date,
  log: (line: string) => void = () => undefined,
): Routes {
  // Resolved plans, system look-ups and the signing key are kept while the directories they
  // were read from are unchanged (see watchStore): a hit costs a few map look-ups.
  const watch = watchStore(storeDir, log);
  const planCache = new Map<string, Kept<Promise<ResolvedPlan>>>();
  const lookupCache = new Map<string, Kept<Promise<SystemRef>>>();
  let signerCache: Kept<{ signer: Signer | undefined; keyDirs: string[] }> | undefined;
  const dirs = {
    images: join(storeDir, 'images'),
    systems: join(storeDir, 'systems'),
  };

  /**
   * What `cache` holds under `key` if it is still current (`stamp` is that of the directories
   * it depends on now, taken after `await watch.settled()`); else `make()`'s, kept (unless the
   * store is not watched) until it fails.
   */
  function kept<T>(
    cache: Map<string, Kept<Promise<T>>>,
    key: string,
    stamp: number | undefined,
    make: () => Promise<T>,
  ): Promise<T> {
    const hit = cache.get(key);
    if (hit && hit.stamp === stamp) return hit.value;
    const value = make();
    if (stamp === undefined) return value;
    cache.delete(key);
    cache.set(key, { stamp, value });
    if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
    value.catch(() => {
      if (cache.get(key)?.value === value) cache.delete(key);
    });
    return value;
  }

  /** The store's signing key (store.yaml's signing_key); call after `await watch.settled()`. */
  function signer(): Signer | undefined {
    const stamp = watch.stamp([storeDir, ...(signerCache?.value.keyDirs ?? [])]);
    if (signerCache && signerCache.stamp === stamp) return signerCache.value.signer;
    const keyPath = signingKeyPath(storeDir);
    let value: Signer | undefined;
    const keyDirs: string[] = [];
    if (keyPath) {
      // Watched before it is read, so a new key (keygen --force) is used at once; where a link
      // leads too, as the key may be outside the store.
      keyDirs.push(dirname(keyPath));
      try {
        keyDirs.push(dirname(realpathSync(keyPath)));
      } catch {
        // unreadable: said below
      }
      for (const dir of keyDirs) watch.add(dir);
      let pem: Buffer;
      try {
        pem = readFileSync(keyPath);
      } catch (error) {
        throw new ImgctlError('NOT_FOUND', `signing_key ${keyPath} cannot be read`, {
          cause: error,
          hint: "create it with 'imgctl keygen', or fix signing_key in store.yaml",
        });
      }
      const key = parsePrivateKey(pem, `signing_key ${keyPath}`);
      value = { key, keyId: keyIdOf(key), publicKeyPem: keyPublicPem(key) };
    }
    // Stamped over the key's directories as they are watched now.
    const now = watch.stamp([storeDir, ...keyDirs]);
    signerCache =
      stamp === undefined || now === undefined
        ? undefined
        : { stamp: now, value: { signer: value, keyDirs } };
    return value;
  }

  async function plan(request: RouteRequest): Promise<Reply> {
    const q = queryOf(request.query, ['image', 'record', 'system', 'vm_name', 'set', 'format']);
    const format = q.one('format') ?? 'plan';
    if (format !== 'plan' && format !== 'signed')
      throw new HttpError(400, 'USAGE', "format is 'plan' (the default) or 'signed'");
    const systemKey = q.one('system');
    let image = q.name('image', 'image');
    const record = q.name('record', 'record');
    const vmName = q.name('vm_name', 'VM');
    const sets = q.all('set');
    if (image === undefined && systemKey === undefined)
      throw new HttpError(400, 'USAGE', 'the plan needs image=NAME or system=NAME|MAC|HOSTNAME');
    await watch.settled();
    let system: string | undefined;
    if (systemKey !== undefined) {
      const found = await lookupSystem(systemKey);
      system = found.name;
      image ??= found.image;
    }
    const sign = signer();
    const imageDir = join(dirs.images, image!);
    const stamp = watch.stamp([
      storeDir,
      dirs.images,
      imageDir,
      join(imageDir, 'records'),
      ...(system === undefined ? [] : [dirs.systems]),
    ]);
    const key = JSON.stringify([image, record, system, vmName, sets, request.authed, sign?.keyId]);
    const result = kept(planCache, key, stamp, () =>
      resolveServed(image!, { record, system, sets, vmName }, request.authed, sign),
    );
    const { plan: shown, body, signature, signatureHeader } = await result;
    const headers: Record<string, string> = { 'cache-control': 'no-store', vary: 'authorization' };
    if (signatureHeader) headers[SIGNATURE_HEADER] = signatureHeader;
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
    image: string,
    options: { record?: string; system?: string; sets: string[]; vmName?: string },
    authed: boolean,
    sign: Signer | undefined,
  ): Promise<ResolvedPlan> {
    const deps = [['store.yaml'], ['images', image, 'image.yaml'], ['images', image, 'records']];
    if (options.system !== undefined) deps.push(['systems', `${options.system}.yaml`]);
    for (const segments of deps) lstatInStore(storeDir, segments);
    // The plan reads whichever record applies, which only resolution knows: all are checked.
    const records = ['images', image, 'records'];
    for (const name of listDir(join(storeDir, ...records)))
      lstatInStore(storeDir, [...records, name]);
    const resolved = await resolvePlan(storeDir, { image, ...options });
    const shown = authed ? resolved : redactPlan(resolved);
    const signature = sign ? signPlan(shown, sign.key) : undefined;
    return {
      plan: shown,
      body: Buffer.from(`${JSON.stringify(shown, null, 2)}\n`),
      signature,
      signatureHeader: signature && formatSignatureHeader(signature),
    };
  }

  /**
   * A system by name, MAC or hostname; its file must not be a symlink (nor, for a MAC or
   * hostname, any system file). Call after `await watch.settled()`.
   */
  function lookupSystem(key: string): Promise<SystemRef> {
    if (!SYSTEM_KEY.test(key) || key.includes('..'))
      throw new HttpError(
        400,
        'USAGE',
        `invalid system '${printable(key)}': give a name, a MAC address or a hostname`,
      );
    return kept(lookupCache, key, watch.stamp([storeDir, dirs.systems]), async () => {
      const byName =
        isValidName(key) && lstatInStore(storeDir, ['systems', `${key}.yaml`]) !== undefined;
      if (!byName) {
        for (const name of listDir(dirs.systems)) lstatInStore(storeDir, ['systems', name]);
      }
      const doc = byName ? await showSystem(storeDir, key) : await findSystem(storeDir, key);
      return { name: doc.name, image: doc.image };
    });
  }

  async function file(request: RouteRequest, image: string, path: string[]): Promise<Reply> {
    const img = await loadImageChecked(image);
    if (path.length === 1 && path[0] === 'kickstart') {
      const q = queryOf(request.query, ['record', 'system', 'vm_name', 'set']);
      const systemKey = q.one('system');
      await watch.settled();
      const system = systemKey === undefined ? undefined : (await lookupSystem(systemKey)).name;
      const resolved = await resolvePlan(storeDir, {
        image,
        record: q.name('record', 'record'),
        system,
        sets: q.all('set'),
        vmName: q.name('vm_name', 'VM'),
      });
      if (resolved.provision.kickstart !== undefined) {
        lstatInStore(storeDir, ['images', image, ...resolved.provision.kickstart.split('/')]);
      }
      const text = await renderImageFile(
        storeDir,
        request.authed ? resolved : redactPlan(resolved),
        'kickstart',
      );
      return { status: 200, body: text, type: 'text/plain; charset=utf-8', headers: noStore };
    }
    queryOf(request.query, []);
    for (const segment of path) {
      if (!FILE_NAME.test(segment) || segment.includes('..'))
        throw new HttpError(400, 'USAGE', `invalid file name '${printable(segment)}'`);
    }
    const script = img.provision?.script ?? 'provision.sh';
    if (path.join('/') === script) {
      return scriptReply(['images', image, ...path], `images/${image}/${script}`);
    }
    if (path[0] === 'common' && path.length === 2) {
      return scriptReply(['common', path[1]!], `common/${path[1]}`);
    }
    if (path[0] === 'custom_scripts' && (path.length === 2 || path.length === 3)) {
      const set = path[1]!;
      if (!(img.provision?.custom_scripts ?? []).includes(set)) {
        throw new HttpError(
          404,
          'NOT_FOUND',
          `image '${image}' uses no custom script set '${printable(set)}'`,
          { hint: `its sets: ${(img.provision?.custom_scripts ?? []).join(', ') || 'none'}` },
        );
      }
      const dir = customScriptsDir(image, set);
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
          { image, set, source: dir[0] === 'images' ? 'image' : 'store', files },
          noStore,
        );
      }
      return scriptReply([...dir, path[2]!], `${dir.join('/')}/${path[2]}`);
    }
    throw new HttpError(
      404,
      'NOT_FOUND',
      `image '${image}' has no file '${printable(path.join('/'))}'`,
      {
        hint: `files: ${script}, kickstart, custom_scripts/SET[/FILE], common/FILE`,
      },
    );
  }

  /** The image's own custom_scripts/<set>/ when it exists, else the store's. */
  function customScriptsDir(image: string, set: string): string[] {
    const own = ['images', image, 'custom_scripts', set];
    if (lstatInStore(storeDir, own)?.isDirectory()) return own;
    const shared = ['custom_scripts', set];
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

  async function loadImageChecked(image: string) {
    lstatInStore(storeDir, ['images', image, 'image.yaml']);
    return loadImage(storeDir, image);
  }

  async function handle(request: RouteRequest): Promise<Reply> {
    const s = request.segments;
    const method = request.method === 'HEAD' ? 'GET' : request.method;
    if (s.length === 0 || (s.length === 1 && s[0] === 'v1')) {
      queryOf(request.query, []);
      await watch.settled();
      const sign = signer();
      const store = storeDoc(storeDir);
      return json(200, {
        apiVersion: 'imgctl/v1',
        kind: 'Server',
        store: store.name,
        signing: sign
          ? { algorithm: 'ed25519', key_id: sign.keyId, public_key: sign.publicKeyPem }
          : null,
      });
    }
    if (s[0] !== 'v1') throw notFound(s);
    const [, noun, a, b, c, ...rest] = s;
    if (noun === 'images' && method === 'GET') {
      if (a === undefined) {
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
      }
      const image = segmentName('image', a);
      if (b === undefined) {
        queryOf(request.query, []);
        lstatInStore(storeDir, ['images', image, 'image.yaml']);
        const shown = await showImage(storeDir, image);
        return json(200, { ...shown, image: imageForDisplay(shown.image) });
      }
      if (b === 'records') {
        queryOf(request.query, []);
        lstatInStore(storeDir, ['images', image, 'image.yaml']);
        if (c === undefined) {
          for (const name of listDir(join(storeDir, 'images', image, 'records'))) {
            if (name.endsWith('.yaml')) lstatInStore(storeDir, ['images', image, 'records', name]);
          }
          return json(200, await listRecords(storeDir, image));
        }
        if (rest.length === 0) {
          const record = segmentName('record', c);
          lstatInStore(storeDir, ['images', image, 'records', `${record}.yaml`]);
          return json(
            200,
            await recordForDisplay(storeDir, await showRecord(storeDir, image, record)),
          );
        }
      }
      if (b === 'files' && c !== undefined) return file(request, image, [c, ...rest]);
      throw notFound(s);
    }
    if (noun === 'systems' && method === 'GET' && b === undefined) {
      if (a === undefined) {
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
          await watch.settled();
          const { name } = await lookupSystem(key);
          return json(200, await systemForDisplay(storeDir, await showSystem(storeDir, name)));
        }
        const hidden = symlinkedEntries(storeDir, ['systems']);
        if (lstatInStore(storeDir, ['systems']) === undefined) return json(200, []);
        return json(
          200,
          (await listSystems(storeDir)).filter((sys) => !hidden.has(`${sys.name}.yaml`)),
        );
      }
      queryOf(request.query, []);
      const name = segmentName('system', a);
      if (!lstatInStore(storeDir, ['systems', `${name}.yaml`]))
        throw new HttpError(404, 'NOT_FOUND', `system '${name}' does not exist`);
      return json(200, await systemForDisplay(storeDir, await showSystem(storeDir, name)));
    }
    if (noun === 'plan' && a === undefined && method === 'GET') return plan(request);
    if (
      noun === 'blobs' &&
      a === 'sha256' &&
      b !== undefined &&
      c === undefined &&
      method === 'GET'
    ) {
      queryOf(request.query, []);
      if (!SHA256_HEX.test(b))
        throw new HttpError(
          400,
          'USAGE',
          `invalid sha256 '${printable(b)}': 64 lowercase hex digits`,
        );
      const bytes = await sendBlob(request.req, request.res, storeDir, b);
      return { streamed: true, bytes };
    }
    if (noun === 'events' && a === undefined && method === 'POST') {
      queryOf(request.query, []);
      const event = parseEvent(request.body, now());
      await appendEvent(storeDir, event);
      return json(201, { event });
    }
    if (noun === 'status' && a === undefined && method === 'GET') {
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
    }
    throw notFound(s);
  }

  function methodsFor(segments: string[]): string[] {
    const [v1, noun, a, b] = segments;
    if (segments.length === 0 || (segments.length === 1 && v1 === 'v1')) return ['GET', 'HEAD'];
    if (v1 !== 'v1') return [];
    if (noun === 'events' && a === undefined) return ['POST'];
    if (noun === 'images' || noun === 'systems' || noun === 'status' || noun === 'plan')
      return ['GET', 'HEAD'];
    if (noun === 'blobs' && a === 'sha256' && b !== undefined) return ['GET', 'HEAD'];
    return [];
  }

  return { handle, methodsFor, close: () => watch.close() };
}

const noStore = { 'cache-control': 'no-store' };

function json(status: number, value: unknown, headers: Record<string, string> = {}): Reply {
  return {
    status,
    body: `${JSON.stringify(value, null, 2)}\n`,
    type: 'application/json',
    headers: { 'cache-control': 'no-cache', ...headers },
  };
}

function notFound(segments: string[]): HttpError {
  return new HttpError(404, 'NOT_FOUND', `no such route /${printable(segments.join('/'))}`, {
    hint: 'docs/server.md lists every route',
  });
}

function segmentName(kind: string, value: string): string {
  if (!isValidName(value)) {
    throw new HttpError(400, 'USAGE', `invalid ${kind} name '${printable(value)}'`, {
      hint: 'names are 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit, without ".."',
    });
  }
  return value;
}

interface Query {
  one(name: string): string | undefined;
  all(name: string): string[];
  name(param: string, kind: string): string | undefined;
}

/**
 * The query of a route that accepts `allowed` parameters: anything else, a repeated parameter
 * (except `set`), a NUL or an overlong value is refused.
 */
function queryOf(query: URLSearchParams, allowed: string[]): Query {
  for (const [key, value] of query) {
    if (!allowed.includes(key))
      throw new HttpError(400, 'USAGE', `unknown query parameter '${printable(key)}'`, {
        hint: allowed.length
          ? `this route takes ${allowed.join(', ')}`
          : 'this route takes no query parameters',
      });
    if (value.length > 1024 || value.includes('\0'))
      throw new HttpError(400, 'USAGE', `query parameter '${key}' is too long or holds a NUL`);
    if (key !== 'set' && query.getAll(key).length > 1)
      throw new HttpError(400, 'USAGE', `query parameter '${key}' is given more than once`);
  }
  return {
    one: (name) => query.get(name) ?? undefined,
    all: (name) => query.getAll(name),
    name(param, kind) {
      const v = query.get(param);
      return v === null ? undefined : segmentName(kind, v);
    },
  };
}

function listDir(path: string): string[] {
  try {
    // synchronous: a handful of names, cheaper than a round trip through the thread pool
    return readdirSync(path);
  } catch {
    return [];
  }
}

function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

function keyPublicPem(key: KeyObject): string {
  return createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
}

function storeDoc(storeDir: string): ImageStoreDoc {
  lstatInStore(storeDir, ['store.yaml']);
  try {
    return parseStoreYaml(storeDir);
  } catch {
    return { apiVersion: 'imgctl/v1', kind: 'ImageStore', name: '' };
  }
}

function parseStoreYaml(storeDir: string): ImageStoreDoc {
  return (parseYamlValue(readFileSync(join(storeDir, 'store.yaml'), 'utf8')) ??
    {}) as ImageStoreDoc;
}

/** The absolute path of store.yaml's signing_key (relative paths are from the store). */
export function signingKeyPath(storeDir: string): string | undefined {
  lstatInStore(storeDir, ['store.yaml']);
  let doc: ImageStoreDoc;
  try {
    doc = parseStoreYaml(storeDir);
  } catch {
    return undefined;
  }
  const key = doc.signing_key;
  if (typeof key !== 'string' || key === '') return undefined;
  return isAbsolute(key) ? key : resolve(storeDir, key);
}
