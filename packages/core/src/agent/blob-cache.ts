/**
 * The agent's content-addressed blob cache (docs/agent.md#the-blob-cache): disk contents pulled
 * from the server, shared by every VM and every agent on the host.
 *
 *   <cache>/sha256/ab/<hex>          a verified blob (read-only)
 *   <cache>/sha256/ab/<hex>.partial  a download in progress or interrupted (resumed)
 *   <cache>/locks/<hex>.lock         held while one agent pulls or evicts that blob: the pid
 *   <cache>/refs/<hex>/<key>         one file per disk built on the blob: the disk's path
 *
 * Two agents pulling the same blob: the first takes the lock, the second waits for it and then
 * finds the blob. A lock left by a dead process (kill -9) is taken over. Eviction (over the size
 * limit) removes least-recently-used blobs that no existing disk references.
 */
import { createHash } from 'node:crypto';
import { chmod, open, readdir, readFile, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DownloadOptions, DownloadResult } from '../client/client.ts';
import { ImgctlError } from '../util/errors.ts';
import { isAlive } from '../util/pid.ts';
import { ensureDir, SHA256_HEX } from '../store/store.ts';

export const DEFAULT_CACHE_DIR = '/var/lib/imgctl/cache';

/** A reference younger than this counts even when its disk does not exist yet (being made). */
const FRESH_REF_MS = 10 * 60_000;
const LOCK_POLL_MS = 100;

export interface BlobDownloader {
  downloadBlob(hex: string, destFile: string, options?: DownloadOptions): Promise<DownloadResult>;
}

export interface EnsureResult {
  path: string;
  /** false when the blob was already in the cache */
  downloaded: boolean;
  size: number;
}

export interface CacheEntry {
  hex: string;
  path: string;
  size: number;
  /** last use (the blob file's mtime, touched on every use) */
  usedAt: Date;
  /** paths of the existing disks built on it */
  refs: string[];
}

export interface BlobCache {
  dir: string;
  path(hex: string): string;
  has(hex: string): Promise<boolean>;
  /** the blob's path, pulled with `downloader` first when missing; waits for another agent's pull */
  ensure(
    hex: string,
    downloader: BlobDownloader,
    options?: DownloadOptions & { onWait?: (pid: number) => void },
  ): Promise<EnsureResult>;
  /** records that the disk at `diskPath` is built on the blob (it is then never evicted) */
  addRef(hex: string, diskPath: string): Promise<void>;
  removeRef(hex: string, diskPath: string): Promise<void>;
  list(): Promise<CacheEntry[]>;
  /** removes unreferenced blobs, least recently used first, until the cache holds ≤ maxBytes */
  evict(maxBytes: number, keep?: string[]): Promise<string[]>;
}

function checkHex(hex: string): string {
  if (!SHA256_HEX.test(hex)) throw new ImgctlError('USAGE', `invalid sha256 '${hex.slice(0, 80)}'`);
  return hex;
}

function refKey(diskPath: string): string {
  return createHash('sha256').update(diskPath).digest('hex').slice(0, 32);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Directories are 0755 and blobs 0444: qemu (another user under qemu:///system) reads them. */
async function mkdirShared(dir: string): Promise<void> {
  await ensureDir(dir, 0o755);
}

export function openBlobCache(dir: string): BlobCache {
  const blobPath = (hex: string) => join(dir, 'sha256', hex.slice(0, 2), hex);
  const lockPath = (hex: string) => join(dir, 'locks', `${hex}.lock`);
  const refsDir = (hex: string) => join(dir, 'refs', hex);

  /** Takes the blob's lock (O_EXCL file holding our pid), taking over one a dead process left. */
  async function lock(hex: string, onWait?: (pid: number) => void): Promise<() => Promise<void>> {
    const file = lockPath(hex);
    await mkdirShared(dirname(file));
    let told = false;
    for (;;) {
      try {
        const handle = await open(file, 'wx', 0o644);
        await handle.writeFile(`${process.pid}\n`);
        await handle.close();
        return () => rm(file, { force: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (pid !== 0 && !isAlive(pid)) {
        // A dead holder: remove its lock only if it is still the same file we read.
        const again = Number((await readFile(file, 'utf8').catch(() => '')).trim());
        if (again === pid) await rm(file, { force: true });
        continue;
      }
      if (pid === 0) {
        // Being written right now (or an empty file from a crash between open and write).
        const age = Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? 0);
        if (age > 5000) await rm(file, { force: true });
      } else if (!told) {
        told = true;
        onWait?.(pid);
      }
      await sleep(LOCK_POLL_MS);
    }
  }

  const cache: BlobCache = {
    dir,
    path: (hex) => blobPath(checkHex(hex)),
    has: (hex) => exists(blobPath(checkHex(hex))),

    async ensure(hex, downloader, options = {}) {
      const file = blobPath(checkHex(hex));
      const touch = async () => {
        const now = new Date();
        await utimes(file, now, now).catch(() => undefined);
      };
      if (await exists(file)) {
        await touch();
        return { path: file, downloaded: false, size: (await stat(file)).size };
      }
      const unlock = await lock(hex, options.onWait);
      try {
        if (await exists(file)) {
          await touch();
          return { path: file, downloaded: false, size: (await stat(file)).size };
        }
        await mkdirShared(dirname(file));
        const result = await downloader.downloadBlob(hex, file, options);
        await chmod(file, 0o444);
        return { path: file, downloaded: true, size: result.size };
      } finally {
        await unlock();
      }
    },

    async addRef(hex, diskPath) {
      const refs = refsDir(checkHex(hex));
      await mkdirShared(refs);
      const handle = await open(join(refs, refKey(diskPath)), 'w', 0o644);
      try {
        await handle.writeFile(`${diskPath}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
    },

    async removeRef(hex, diskPath) {
      await rm(join(refsDir(checkHex(hex)), refKey(diskPath)), { force: true });
    },

    async list() {
      const entries: CacheEntry[] = [];
      const root = join(dir, 'sha256');
      for (const prefix of await readdir(root).catch(() => [] as string[])) {
        for (const name of await readdir(join(root, prefix)).catch(() => [] as string[])) {
          if (!SHA256_HEX.test(name)) continue;
          const path = join(root, prefix, name);
          const info = await stat(path).catch(() => undefined);
          if (!info?.isFile()) continue;
          entries.push({
            hex: name,
            path,
            size: info.size,
            usedAt: info.mtime,
            refs: await liveRefs(name),
          });
        }
      }
      return entries;
    },

    async evict(maxBytes, keep = []) {
      const entries = await cache.list();
      let total = entries.reduce((sum, e) => sum + e.size, 0);
      const removed: string[] = [];
      const candidates = entries
        .filter((e) => e.refs.length === 0 && !keep.includes(e.hex))
        .sort((a, b) => a.usedAt.getTime() - b.usedAt.getTime());
      for (const entry of candidates) {
        if (total <= maxBytes) break;
        const unlock = await lock(entry.hex);
        try {
          // Re-checked under the lock: an agent may have referenced it meanwhile.
          if ((await liveRefs(entry.hex)).length > 0) continue;
          await rm(entry.path, { force: true });
          await rm(refsDir(entry.hex), { recursive: true, force: true });
          total -= entry.size;
          removed.push(entry.hex);
        } finally {
          await unlock();
        }
      }
      return removed;
    },
  };

  /** Paths of disks still built on the blob; references to deleted disks are dropped. */
  async function liveRefs(hex: string): Promise<string[]> {
    const refs = refsDir(hex);
    const live: string[] = [];
    for (const name of await readdir(refs).catch(() => [] as string[])) {
      const file = join(refs, name);
      const diskPath = (await readFile(file, 'utf8').catch(() => '')).trim();
      const info = await stat(file).catch(() => undefined);
      if (diskPath !== '' && (await exists(diskPath))) live.push(diskPath);
      else if (info && Date.now() - info.mtimeMs < FRESH_REF_MS) live.push(diskPath);
      else await rm(file, { force: true });
    }
    return live;
  }

  return cache;
}
