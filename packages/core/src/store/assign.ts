import { parse } from 'yaml';
import type { PathSegment } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';

export interface Assignment {
  path: PathSegment[];
  /** undefined for `PATH=` with --unset semantics is not supported; use `null` to clear */
  value: unknown;
  text: string;
}

/**
 * Parses `devices.memory=1GiB`, `boot[0].arch=x86_64`, `labels.tier=web`. The value is read as a
 * YAML scalar or flow collection, so `vcpus=2` is a number and `features=[acpi,apic]` a list.
 */
export function parseAssignment(text: string): Assignment {
  const eq = text.indexOf('=');
  if (eq <= 0) {
    throw new ImgctlError('USAGE', `expected PATH=VALUE, got '${printable(text)}'`, {
      hint: 'e.g. devices.memory=1GiB or labels.tier=web',
    });
  }
  const path = parsePath(text.slice(0, eq));
  const raw = text.slice(eq + 1);
  return { path, value: parseValue(raw), text };
}

/** A template (`{{ HOSTNAME }}-web`) is text, never a YAML flow mapping. */
function parseValue(raw: string): unknown {
  if (raw === '' || raw.includes('{{') || raw.includes('{%')) return raw;
  try {
    return parse(raw);
  } catch {
    return raw;
  }
}

const SEGMENT = /^([A-Za-z0-9_-]+)((?:\[\d+\])*)$/;

function parsePath(text: string): PathSegment[] {
  const segments: PathSegment[] = [];
  for (const part of text.split('.')) {
    const m = SEGMENT.exec(part);
    if (!m)
      throw new ImgctlError('USAGE', `invalid path '${printable(text)}'`, {
        hint: 'paths look like devices.memory or disks[0].size',
      });
    segments.push(m[1]!);
    for (const index of m[2]!.matchAll(/\[(\d+)\]/g)) segments.push(Number(index[1]));
  }
  return segments;
}
