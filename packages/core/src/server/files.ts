/**
 * What the server reads from the store, and how: every path is built from validated segments and
 * checked with lstat, component by component, so a symlink anywhere in the store (committed to
 * git, or planted) never leads a request outside it. Blobs stream with Range support.
 */
import { type FSWatcher, type Stats, lstatSync, readdirSync, statfsSync, watch } from 'node:fs';
import { open } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { ErrorCode } from '../util/errors.ts';

/** An error with the HTTP status it is answered with; `code` is one of design.md §4. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    code: ErrorCode,
    message: string,
    options: { hint?: string; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.hint = options.hint;
    this.headers = options.headers ?? {};
  }
}

/**
 * lstat of `storeDir/segments…`, refusing a symlink at any level below the store. Returns
 * undefined when some component does not exist.
 */
export function lstatInStore(storeDir: string, segments: readonly string[]): Stats | undefined {
  let path = storeDir;
  let st: Stats | undefined;
  for (const [i, segment] of segments.entries()) {
    path = `${path}/${segment}`;
    try {
      st = lstatSync(path, { throwIfNoEntry: false });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOTDIR') throw error;
      st = undefined;
    }
    if (st === undefined) return undefined;
    if (st.isSymbolicLink()) {
      throw new HttpError(
        403,
        'VALIDATION',
        `${segments.slice(0, i + 1).join('/')} is a symbolic link; the server serves nothing through symlinks`,
        { hint: 'replace the link with the file itself' },
      );
    }
  }
  return st;
}

/** Like lstatInStore, but the path must be a regular file; NOT_FOUND (`what`) otherwise. */
export function fileInStore(storeDir: string, segments: readonly string[], what: string): string {
  const st = lstatInStore(storeDir, segments);
  if (!st?.isFile()) throw new HttpError(404, 'NOT_FOUND', `${what} does not exist`);
  return join(storeDir, ...segments);
}

/** Names of the entries of a store directory that are symlinks (listings leave them out). */
export function symlinkedEntries(storeDir: string, segments: readonly string[]): Set<string> {
  try {
    return new Set(
      readdirSync(join(storeDir, ...segments), { withFileTypes: true })
        .filter((e) => e.isSymbolicLink())
        .map((e) => e.name),
    );
  } catch {
    return new Set();
  }
}

/**
 * Tells when the part of the store plans are built from may have changed, so what was resolved
 * from it can be kept until then. The directories a plan reads (the store's root, `images/`,
 * each `images/<image>/` and its `records/`, `systems/`, and those given to `add`, e.g. the
 * signing key's) are watched with inotify; each has a counter that any event in it moves.
 */
export interface StoreWatch {
  /**
   * A number that grows whenever one of `dirs` (absolute paths of watched directories) or an
   * entry in it changes: a write, a rename over a file, a new or removed file or directory, the
   * directory itself replaced. Take it after `await settled()` and before reading the store;
   * equal stamps then mean nothing read from those directories changed. Undefined when the store
   * cannot be watched: then nothing may be kept.
   */
  stamp(dirs: readonly string[]): number | undefined;
  /**
   * Resolves in the check phase of this turn of the event loop: by then the events of every
   * change made before a request handled in this turn arrived have been read (the kernel queued
   * them before the request's bytes, and one poll phase reads both).
   */
  settled(): Promise<void>;
  /** watches this directory too, from now on (an absolute path; may be outside the store) */
  add(dir: string): void;
  close(): void;
}

/**
 * Starts watching `storeDir`. On a network file system (whose remote edits inotify never
 * reports), or when a watch cannot be set, `stamp` is undefined; `log` hears why.
 */
export function watchStore(storeDir: string, log: (line: string) => void): StoreWatch {
  /** watched directory → its watcher and the inode watched */
  const watched = new Map<string, { watcher: FSWatcher; ino: number }>();
  /** directory → events seen in it (kept when the watch is renewed: counters only grow) */
  const changes = new Map<string, number>();
  const extra = new Set<string>();
  let total = 0;
  let synced = -1;
  let failed = false;
  let pending: Promise<void> | undefined;
  const fail = (reason: string) => {
    if (failed) return;
    failed = true;
    log(`not watching the store: ${reason}; plans are resolved on every request`);
    close();
  };

  function watchDir(dir: string): void {
    const st = lstatSync(dir, { throwIfNoEntry: false });
    const old = watched.get(dir);
    if (!st?.isDirectory()) {
      if (old) {
        old.watcher.close();
        watched.delete(dir);
      }
      return;
    }
    if (old?.ino === st.ino) return;
    old?.watcher.close();
    // Watch first, then note the inode: a directory replaced in between changes its parent,
    // which is watched too, so the next sync looks again.
    const watcher = watch(dir, { persistent: false }, () => {
      changes.set(dir, (changes.get(dir) ?? 0) + 1);
      total++;
    });
    watcher.on('error', (error) => fail(`${dir}: ${error.message}`));
    watched.set(dir, { watcher, ino: st.ino });
    // A new watch may have missed changes made before it was set.
    changes.set(dir, (changes.get(dir) ?? 0) + 1);
  }

  /** Brings the watched set up to date with the directories that exist now. */
  function sync(): void {
    const images = join(storeDir, 'images');
    const dirs = [storeDir, images, join(storeDir, 'systems'), ...extra];
    for (const name of readdirSafe(images)) {
      // Not through a symlink: lstat follows every component but the last.
      const image = join(images, name);
      if (lstatSync(image, { throwIfNoEntry: false })?.isDirectory())
        dirs.push(image, join(image, 'records'));
    }
    // releases/IMAGE holds channels.yaml and the releases; releases/IMAGE/REV its release.yaml
    const releases = join(storeDir, 'releases');
    dirs.push(releases);
    for (const name of readdirSafe(releases)) {
      const image = join(releases, name);
      if (!lstatSync(image, { throwIfNoEntry: false })?.isDirectory()) continue;
      dirs.push(image);
      for (const rev of readdirSafe(image))
        if (lstatSync(join(image, rev), { throwIfNoEntry: false })?.isDirectory())
          dirs.push(join(image, rev));
    }
    for (const dir of dirs) watchDir(dir);
    const wanted = new Set(dirs);
    for (const [dir, { watcher }] of watched) {
      if (!wanted.has(dir)) {
        watcher.close();
        watched.delete(dir);
      }
    }
  }

  function close(): void {
    for (const { watcher } of watched.values()) watcher.close();
    watched.clear();
  }

  const remote = remoteFileSystem(storeDir);
  if (remote) fail(`it is on ${remote}, where edits made on other hosts raise no events`);

  return {
    stamp(dirs) {
      if (failed) return undefined;
      if (synced !== total) {
        // A change made while the directories are read moves the counters again (its event
        // arrives later), so nothing read after this call is ever taken for current when stale.
        const at = total;
        try {
          sync();
        } catch (error) {
          fail(`${storeDir}: ${(error as Error).message}`);
        }
        synced = at;
      }
      let sum = 0;
      for (const dir of dirs) sum += changes.get(dir) ?? 0;
      return failed ? undefined : sum;
    },
    settled() {
      pending ??= new Promise<void>((resolveSettled) =>
        setImmediate(() => {
          pending = undefined;
          resolveSettled();
        }),
      );
      return pending;
    },
    add(dir) {
      if (failed) return;
      extra.add(dir);
      // Watched now, before the caller reads what is in it.
      try {
        watchDir(dir);
      } catch (error) {
        fail(`${dir}: ${(error as Error).message}`);
      }
    },
    close() {
      failed = true;
      close();
    },
  };
}

/** statfs magic numbers of file systems whose changes on other hosts inotify does not see */
const REMOTE_FS: Record<number, string> = {
  0x6969: 'NFS',
  0x517b: 'SMB',
  0xff534d42: 'CIFS',
  0xfe534d42: 'SMB2',
  0x65735546: 'FUSE',
  0x01021997: '9p',
  0x00c36400: 'Ceph',
  0x47504653: 'GPFS',
  0x0bd00bd0: 'Lustre',
};

function remoteFileSystem(dir: string): string | undefined {
  try {
    return REMOTE_FS[statfsSync(dir).type];
  } catch {
    return undefined;
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export type ByteRange = { start: number; end: number };

/**
 * The one range of a `Range` header (RFC 9110 §14), `'unsatisfiable'` when it starts at or past
 * the end, or undefined when the header is absent, malformed or asks for several ranges — then
 * the whole file is sent, which the RFC allows.
 */
export function parseRange(
  header: string | undefined,
  size: number,
): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  if (!Number.isSafeInteger(start) || (m[2] !== '' && Number(m[2]) < start)) return undefined;
  if (start >= size) return 'unsatisfiable';
  const last = m[2] === '' ? size - 1 : Number(m[2]);
  return { start, end: Math.min(last, size - 1) };
}

const BLOB_CHUNK = 1024 * 1024;

/** Where blob `hex` is, below the store: .blobs/sha256/ab/<hex> (as store.ts's blobFile). */
export function blobSegments(hex: string): string[] {
  return ['.blobs', 'sha256', hex.slice(0, 2), hex];
}

/**
 * Answers GET/HEAD for one blob: ETag (the sha256), Content-Length, Accept-Ranges, immutable
 * caching, a single Range (206, or 416 past the end), If-None-Match (304) and If-Range.
 * Resolves with the number of body bytes sent once the response is over.
 */
export async function sendBlob(
  req: IncomingMessage,
  res: ServerResponse,
  storeDir: string,
  hex: string,
): Promise<number> {
  const path = fileInStore(storeDir, blobSegments(hex), `blob sha256:${hex}`);
  const handle = await open(path, 'r');
  let owned = true;
  try {
    const size = (await handle.stat()).size;
    const etag = `"${hex}"`;
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      etag,
      'accept-ranges': 'bytes',
      'cache-control': 'public, max-age=31536000, immutable',
    };
    const inm = req.headers['if-none-match'];
    if (inm !== undefined && (inm === '*' || inm.split(',').some((t) => t.trim() === etag))) {
      res.writeHead(304, headers).end();
      return 0;
    }
    const ifRange = req.headers['if-range'];
    let range =
      ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, size) : undefined;
    if (range === 'unsatisfiable') {
      throw new HttpError(
        416,
        'USAGE',
        `range '${String(req.headers.range).slice(0, 80)}' is outside the blob (${size} bytes)`,
        { headers: { 'content-range': `bytes */${size}` } },
      );
    }
    let status = 200;
    if (range) {
      status = 206;
      headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`;
    } else range = { start: 0, end: size - 1 };
    const length = range.end - range.start + 1;
    headers['content-length'] = length;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return 0;
    }
    owned = false;
    const stream = handle.createReadStream({
      start: range.start,
      end: range.end,
      highWaterMark: BLOB_CHUNK,
      autoClose: true,
    });
    return await new Promise<number>((resolve) => {
      let sent = 0;
      stream.on('data', (chunk: string | Buffer) => {
        sent += chunk.length;
        if (!res.write(chunk)) stream.pause();
      });
      res.on('drain', () => stream.resume());
      stream.on('end', () => {
        res.end();
        resolve(sent);
      });
      stream.on('error', () => {
        res.destroy();
        resolve(sent);
      });
      res.on('close', () => {
        if (!stream.destroyed) stream.destroy();
        resolve(sent);
      });
    });
  } finally {
    if (owned) await handle.close();
  }
}
