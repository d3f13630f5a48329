/** What the routes share to read a request and write a reply. */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { ImgctlError } from '../util/errors.ts';
import { isValidName, printable } from '../util/names.ts';
import { HttpError } from './files.ts';
import type { Reply } from './route-table.ts';

export const noStore = { 'cache-control': 'no-store' };

export function json(status: number, value: unknown, headers: Record<string, string> = {}): Reply {
  return {
    status,
    body: `${JSON.stringify(value, null, 2)}\n`,
    type: 'application/json',
    headers: { 'cache-control': 'no-cache', ...headers },
  };
}

export function segmentName(kind: string, value: string): string {
  if (!isValidName(value)) {
    throw new HttpError(400, 'USAGE', `invalid ${kind} name '${printable(value)}'`, {
      hint: 'names are 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit, without ".."',
    });
  }
  return value;
}

export interface Query {
  one(name: string): string | undefined;
  all(name: string): string[];
  name(param: string, kind: string): string | undefined;
}

/**
 * The query of a route that accepts `allowed` parameters: anything else, a repeated parameter
 * (except `set`), a NUL or an overlong value is refused.
 */
export function queryOf(query: URLSearchParams, allowed: string[]): Query {
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

/** An error for the log: its message, and each detail of an ImgctlError (every problem of a file). */
export function errorText(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const details = error instanceof ImgctlError ? error.details : [];
  return [message, ...details].join('; ');
}

export function listDir(path: string): string[] {
  try {
    // synchronous: a handful of names, cheaper than a round trip through the thread pool
    return readdirSync(path);
  } catch {
    return [];
  }
}

export function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}
