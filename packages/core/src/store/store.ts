import { type Dirent, readdirSync } from 'node:fs';
import { access, mkdir, readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { assertName, printable } from '../util/names.ts';

export const SHA256_HEX = /^[0-9a-f]{64}$/;

export const STORE_FILE = 'store.yaml';

export interface FindStoreOptions {
  /** --store, when given */
  store?: string;
  env: NodeJS.ProcessEnv | Record<string, string | undefined>;
  cwd: string;
}

/** The store directory: --store, else $IMGCTL_STORE, else the nearest store.yaml above cwd. */
export async function findStore(options: FindStoreOptions): Promise<string> {
  const explicit = options.store ?? options.env.IMGCTL_STORE;
  if (explicit) {
    const dir = resolve(options.cwd, explicit);
    if (!(await exists(join(dir, STORE_FILE)))) {
      throw new ImgctlError('NOT_FOUND', `no image store at ${dir} (no ${STORE_FILE})`, {
        hint: `create one with 'imgctl init ${explicit}'`,
      });
    }
    return dir;
  }
  for (let dir = resolve(options.cwd); ; dir = dirname(dir)) {
    if (await exists(join(dir, STORE_FILE))) return dir;
    if (dirname(dir) === dir) break;
  }
  throw new ImgctlError('NOT_FOUND', `no image store found in ${options.cwd} or above it`, {
    hint: "pass --store DIR, set IMGCTL_STORE, or create one with 'imgctl init DIR'",
  });
}

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Paths inside a store; every name is validated before it becomes a path segment. */
export const storePaths = {
  storeFile: (storeDir: string) => join(storeDir, STORE_FILE),
  imagesDir: (storeDir: string) => join(storeDir, 'images'),
  systemsDir: (storeDir: string) => join(storeDir, 'systems'),
  imageDir: (storeDir: string, image: string) =>
    join(storeDir, 'images', assertName('image', image)),
  imageFile: (storeDir: string, image: string) =>
    join(storePaths.imageDir(storeDir, image), 'image.yaml'),
  recordsDir: (storeDir: string, image: string) =>
    join(storePaths.imageDir(storeDir, image), 'records'),
  recordFile: (storeDir: string, image: string, record: string) =>
    join(storePaths.recordsDir(storeDir, image), `${assertName('record', record)}.yaml`),
  systemFile: (storeDir: string, system: string) =>
    join(storeDir, 'systems', `${assertName('system', system)}.yaml`),
  blobsDir: (storeDir: string) => join(storeDir, '.blobs', 'sha256'),
  /** content-addressed disk contents: .blobs/sha256/ab/<64 hex> */
  blobFile: (storeDir: string, sha256: string) => {
    if (!SHA256_HEX.test(sha256))
      throw new ImgctlError('USAGE', `invalid sha256 '${printable(sha256)}'`);
    return join(storeDir, '.blobs', 'sha256', sha256.slice(0, 2), sha256);
  },
  stateDir: (storeDir: string) => join(storeDir, '.state'),
  /** store-relative display paths, as used in problems and messages */
  rel: {
    imageFile: (image: string) => `images/${image}/image.yaml`,
    recordFile: (image: string, record: string) => `images/${image}/records/${record}.yaml`,
    systemFile: (system: string) => `systems/${system}.yaml`,
  },
};

/** Names of the entries of a directory that are directories (or `.yaml` files, with `yamlFiles`), sorted. */
export async function listNames(dir: string, kind: 'dirs' | 'yamlFiles'): Promise<string[]> {
  try {
    return namesOf(await readdir(dir, { withFileTypes: true }), kind);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

export function listNamesSync(dir: string, kind: 'dirs' | 'yamlFiles'): string[] {
  try {
    return namesOf(readdirSync(dir, { withFileTypes: true }), kind);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

function namesOf(entries: Dirent[], kind: 'dirs' | 'yamlFiles'): string[] {
  const names =
    kind === 'dirs'
      ? entries.filter((e) => e.isDirectory()).map((e) => e.name)
      : entries
          .filter((e) => e.isFile() && e.name.endsWith('.yaml'))
          .map((e) => e.name.slice(0, -'.yaml'.length));
  return names.filter((n) => !n.startsWith('.')).sort();
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * mkdir -p, level by level: Node's recursive mkdir never returns where the kernel refuses a new
 * directory with ENOENT under one that exists (/proc, /sys); this fails at once there.
 */
export async function ensureDir(path: string, mode?: number): Promise<void> {
  try {
    await mkdir(path, { mode });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && (await isDirectory(path))) return;
    if (code !== 'ENOENT' || dirname(path) === path) throw error;
    await ensureDir(dirname(path), mode);
    await mkdir(path, { mode }).catch(async (again: NodeJS.ErrnoException) => {
      if (!(again.code === 'EEXIST' && (await isDirectory(path)))) throw again;
    });
  }
}

/** `fn` over `items` with at most `limit` running at once; results in input order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  });
  await Promise.all(workers);
  return results;
}
