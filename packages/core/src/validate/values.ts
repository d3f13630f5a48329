/**
 * Reading values out of a parsed document whose shape has not been checked: a value of the
 * wrong type reads as absent, so a check never throws on what the schema already reports.
 */
import type { PathSegment } from '../yaml/document.ts';
import { parseSize } from '../util/sizes.ts';

export type Obj = Record<string, unknown>;

export function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

export function entries(value: unknown): [string, unknown][] {
  return isObject(value) ? Object.entries(value) : [];
}

export function path(doc: unknown, segments: readonly PathSegment[]): unknown {
  let node = doc;
  for (const segment of segments) {
    if (Array.isArray(node) && typeof segment === 'number') node = node[segment];
    else if (isObject(node)) node = node[String(segment)];
    else return undefined;
  }
  return node;
}

export function sizeOrUndefined(value: unknown): number | undefined {
  if (typeof value !== 'string' && typeof value !== 'number') return undefined;
  try {
    return parseSize(value);
  } catch {
    return undefined;
  }
}

/** A value as a problem message quotes it: strings quoted and cut at 40 characters. */
export function show(value: unknown): string {
  if (typeof value === 'string') return `'${value.length > 40 ? `${value.slice(0, 40)}…` : value}'`;
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'object') return Array.isArray(value) ? 'a list' : 'a mapping';
  return String(value);
}
