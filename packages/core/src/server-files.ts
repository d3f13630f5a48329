/**
 * What the server reads from the store, and how: every path is built from validated segments and
 * checked with lstat, component by component, so a symlink anywhere in the store (committed to
 * git, or planted) never leads a request outside it. Blobs stream with Range support.
 */
import { type Stats, lstatSync, readdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { ErrorCode } from './errors.ts';

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

/** lstat results of one request, so a path shared by several checks is read once. */
export type StatMemo = Map<string, Stats | undefined>;

/**
 * lstat of `storeDir/segments…`, refusing a symlink at any level below the store. Returns
 * undefined when some component does not exist.
 */
export function lstatInStore(
  storeDir: string,
  segments: readonly string[],
  memo?: StatMemo,
): Stats | undefined {
  let path = storeDir;
  let st: Stats | undefined;
  for (const [i, segment] of segments.entries()) {
    path = `${path}/${segment}`;
    if (memo?.has(path)) st = memo.get(path);
    else {
      try {
        st = lstatSync(path, { throwIfNoEntry: false });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOTDIR') throw error;
        st = undefined;
      }
      memo?.set(path, st);
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
 * A stamp of the files a response was built from (inode, size, times, type of each): equal
 * stamps mean none of them changed. Refuses symlinks like lstatInStore.
 */
export function stampOf(
  storeDir: string,
  paths: ReadonlyArray<readonly string[]>,
  memo: StatMemo = new Map(),
): string {
  return paths
    .map((segments) => {
      const st = lstatInStore(storeDir, segments, memo);
      return st
        ? `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.isDirectory() ? 'd' : 'f'}`
        : '-';
    })
    .join('|');
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

export const BLOB_CHUNK = 1024 * 1024;

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
  const segments = ['.blobs', 'sha256', hex.slice(0, 2), hex];
  const path = fileInStore(storeDir, segments, `blob sha256:${hex}`);
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
