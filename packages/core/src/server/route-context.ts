/**
 * What the routes share about the store: its watch, and what is kept while the directories it
 * was read from are unchanged — store.yaml, the signing key, system look-ups (resolved plans are
 * kept by the plan route, with `kept`).
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { isValidName, printable } from '../util/names.ts';
import { DEFAULT_SIGNATURE_TTL_S, keyIdOf, parsePrivateKey, ttlSeconds } from '../plan/signing.ts';
import { loadStoreConfig, signingKeyPath } from '../store/store-config.ts';
import {
  parseImageRef,
  refuseRevoked,
  type ResolvedImageRef,
  resolveImageRef,
  revokedOnlyBlobs,
} from '../store/releases.ts';
import { findSystem, showSystem } from '../store/systems.ts';
import type { ImageStoreDoc } from '../store/types.ts';
import { type BootTokens, createBootTokens } from './boot-tokens.ts';
import { HttpError, lstatInStore, type StoreWatch, watchStore } from './files.ts';
import { listDir } from './route-helpers.ts';

/** entries kept in each cache: plans by query, system look-ups by key */
const CACHE_SIZE = 512;
/** a name, a MAC address or a hostname */
export const SYSTEM_KEY =
  /^([0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))$/;

export interface Signer {
  key: KeyObject;
  keyId: string;
  publicKeyPem: string;
  /** store.yaml's signature_ttl in seconds (default 1h) */
  ttlSeconds: number;
}

export interface SystemRef {
  name: string;
  image: string;
  /** the system's `netboot` */
  netboot: boolean;
}

/** A value kept while the directories it was read from are unchanged (StoreWatch.stamp). */
export interface Kept<T> {
  stamp: number;
  value: T;
}

export interface ServedImage extends ResolvedImageRef {
  /** [] for the working image, ['releases', NAME, REV] for a release */
  base: string[];
}

export interface RouteContext {
  storeDir: string;
  now: () => Date;
  /** the server's log: one line, never a token */
  log: (line: string) => void;
  /** the server has a write token: agents can post events (and so end a network boot) */
  acceptsEvents: boolean;
  /** the tokens of network boots */
  bootTokens: BootTokens;
  /**
   * Systems that posted `done` whose `netboot: true` could not be cleared, with the SHA-256 of
   * their file then: they boot the local disk until the file changes (else they would be
   * installed again at every boot).
   */
  netbootHeld: Map<string, string>;
  watch: StoreWatch;
  dirs: { images: string; systems: string; releases: string };
  /** store.yaml (refused when a symlink); undefined when it cannot be read or is not valid */
  storeConfig(): Promise<ImageStoreDoc | undefined>;
  /** The store's signing key (store.yaml's signing_key); call after `await watch.settled()`. */
  signer(): Promise<Signer | undefined>;
  /**
   * A system by name, MAC or hostname; its file must not be a symlink (nor, for a MAC or
   * hostname, any system file). Call after `await watch.settled()`.
   */
  lookupSystem(key: string): Promise<SystemRef>;
  /**
   * An image reference (NAME, NAME@REV, NAME@CHANNEL) resolved, with the path segments below
   * the store of the tree it is read from; 410 Gone (INTEGRITY) for a revoked release. Call
   * after `await watch.settled()`.
   */
  imageRef(text: string): Promise<ServedImage>;
  /** the directories a plan or a file of image `name` is read from, for StoreWatch.stamp */
  imageDirs(name: string): string[];
  /**
   * Blobs only revoked releases name, each with who withdrew it (store/releases.ts); kept
   * while images/ and releases/ are unchanged. Call after `await watch.settled()`.
   */
  withdrawnBlobs(): Promise<Map<string, string>>;
  /** stops watching the store */
  close(): void;
}

/**
 * What `cache` holds under `key` if it is still current (`stamp` is that of the directories
 * it depends on now, taken after `await watch.settled()`); else `make()`'s, kept (unless the
 * store is not watched) until it fails.
 */
export function kept<T>(
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

export interface RouteContextOptions {
  acceptsEvents?: boolean;
  bootTokenTtlMs?: number;
}

export function createRouteContext(
  storeDir: string,
  now: () => Date,
  log: (line: string) => void,
  options: RouteContextOptions = {},
): RouteContext {
  // Kept while the directories they were read from are unchanged (see watchStore): a hit
  // costs a few map look-ups.
  const watch = watchStore(storeDir, log);
  const configCache = new Map<string, Kept<Promise<ImageStoreDoc | undefined>>>();
  const lookupCache = new Map<string, Kept<Promise<SystemRef>>>();
  /** the signer, for as long as store.yaml is the same object and its key's directories unchanged */
  let signerCache:
    | {
        config: ImageStoreDoc | undefined;
        stamp: number;
        signer: Signer | undefined;
        keyDirs: string[];
      }
    | undefined;
  /** resolved image references, kept while the image's and its releases' directories are unchanged */
  const refCache = new Map<string, Kept<Promise<ResolvedImageRef>>>();
  const withdrawnCache = new Map<string, Kept<Promise<Map<string, string>>>>();
  const dirs = {
    images: join(storeDir, 'images'),
    systems: join(storeDir, 'systems'),
    releases: join(storeDir, 'releases'),
  };

  function storeConfig(): Promise<ImageStoreDoc | undefined> {
    lstatInStore(storeDir, ['store.yaml']);
    return kept(configCache, 'store.yaml', watch.stamp([storeDir]), () =>
      loadStoreConfig(storeDir).catch(() => undefined),
    );
  }

  async function signer(): Promise<Signer | undefined> {
    const config = await storeConfig();
    const stamp = watch.stamp(signerCache?.keyDirs ?? []);
    if (signerCache && signerCache.config === config && signerCache.stamp === stamp)
      return signerCache.signer;
    const keyPath = config && signingKeyPath(storeDir, config);
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
      const ttl = config.signature_ttl;
      value = {
        key,
        keyId: keyIdOf(key),
        publicKeyPem: keyPublicPem(key),
        ttlSeconds: ttl === undefined ? DEFAULT_SIGNATURE_TTL_S : ttlSeconds(ttl, 'signature_ttl'),
      };
    }
    // Stamped over the key's directories as they are watched now.
    const keyStamp = watch.stamp(keyDirs);
    signerCache =
      stamp === undefined || keyStamp === undefined
        ? undefined
        : { config, stamp: keyStamp, signer: value, keyDirs };
    return value;
  }

  async function imageRef(text: string): Promise<ServedImage> {
    const ref = parseImageRef(text);
    if (ref.revision !== undefined || ref.channel !== undefined) {
      lstatInStore(storeDir, ['releases', ref.name, 'channels.yaml']);
      if (ref.revision !== undefined)
        lstatInStore(storeDir, ['releases', ref.name, String(ref.revision), 'release.yaml']);
    } else lstatInStore(storeDir, ['images', ref.name, 'image.yaml']);
    const stamp = watch.stamp([storeDir, dirs.images, ...imageDirs(ref.name)]);
    const resolved = await kept(refCache, text, stamp, () => resolveImageRef(storeDir, text));
    const base = resolved.release
      ? ['releases', resolved.name, String(resolved.release.revision)]
      : [];
    lstatInStore(storeDir, [...base, 'images', resolved.name, 'image.yaml']);
    try {
      refuseRevoked(resolved);
    } catch (error) {
      const e = error as ImgctlError;
      throw new HttpError(410, e.code, e.message, e.hint ? { hint: e.hint } : {});
    }
    return { ...resolved, base };
  }

  function imageDirs(name: string): string[] {
    const image = join(dirs.images, name);
    const releases = join(storeDir, 'releases', name);
    return [
      image,
      join(image, 'records'),
      dirs.releases,
      releases,
      ...listDir(releases).map((rev) => join(releases, rev)),
    ];
  }

  function withdrawnBlobs(): Promise<Map<string, string>> {
    const images = listDir(dirs.images).map((name) => join(dirs.images, name));
    const releases = listDir(dirs.releases).flatMap((name) => imageDirs(name).slice(2));
    const stamp = watch.stamp([storeDir, dirs.images, ...images, ...releases]);
    return kept(withdrawnCache, 'blobs', stamp, () => revokedOnlyBlobs(storeDir));
  }

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
      return { name: doc.name, image: doc.image, netboot: doc.netboot === true };
    });
  }

  return {
    storeDir,
    now,
    log,
    acceptsEvents: options.acceptsEvents ?? false,
    bootTokens: createBootTokens(now, options.bootTokenTtlMs),
    netbootHeld: new Map(),
    watch,
    dirs,
    storeConfig,
    signer,
    lookupSystem,
    imageRef,
    imageDirs,
    withdrawnBlobs,
    close: () => watch.close(),
  };
}

function keyPublicPem(key: KeyObject): string {
  return createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
}
