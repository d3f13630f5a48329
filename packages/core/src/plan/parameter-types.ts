/**
 * A parameter's value read by its type (string, integer, boolean, size, or untyped): strictly
 * from YAML, leniently from the command line, where every value is text.
 */
import { parse as parseYamlValue } from 'yaml';
import { printable } from '../util/names.ts';
import { parseSize } from '../util/sizes.ts';
import type { Parameter } from '../store/types.ts';

type Typed = { ok: true; value: unknown } | { ok: false; error: string };

/**
 * Checks a value from YAML against the parameter's type, as strictly as `image validate` does
 * (an integer is a YAML number, a boolean is true or false); a number or boolean given for a
 * string parameter becomes its text.
 */
export function typeValue(p: Parameter, value: unknown): Typed {
  if (value === null) return { ok: true, value: null };
  switch (p.type) {
    case undefined:
      return { ok: true, value };
    case 'string':
      if (typeof value === 'string') return { ok: true, value };
      if (typeof value === 'number' || typeof value === 'boolean')
        return { ok: true, value: String(value) };
      return { ok: false, error: `expected a string, got ${describe(value)}` };
    case 'integer':
      return Number.isSafeInteger(value)
        ? { ok: true, value }
        : { ok: false, error: `expected an integer, got ${describe(value)}` };
    case 'boolean':
      return typeof value === 'boolean'
        ? { ok: true, value }
        : { ok: false, error: `expected true or false, got ${describe(value)}` };
    case 'size':
      if (typeof value === 'string' || typeof value === 'number') return parseSizeValue(value);
      return { ok: false, error: `expected a size (e.g. 512MiB, 2GiB), got ${describe(value)}` };
  }
}

/** A --set value (always text) read by the parameter's type. */
export function parseCommandLineValue(p: Parameter, text: string): Typed {
  switch (p.type) {
    case 'string':
      return { ok: true, value: text };
    case 'integer':
      return parseInteger(text);
    case 'boolean':
      return parseBoolean(text);
    case 'size':
      return parseSizeValue(text);
    case undefined:
      // Untyped: like the image's default — text when the default is text, else read as YAML
      // (so a list or a number can be given); `1.10` stays text for a text parameter.
      if (typeof p.default === 'string' || text === '') return { ok: true, value: text };
      try {
        return { ok: true, value: parseYamlValue(text) ?? null };
      } catch {
        return { ok: true, value: text };
      }
  }
}

function parseInteger(text: string): Typed {
  const t = text.trim();
  if (/^[+-]?\d+$/.test(t) && Number.isSafeInteger(Number(t)))
    return { ok: true, value: Number(t) };
  return { ok: false, error: `expected an integer, got '${printable(text)}'` };
}

function parseBoolean(text: string): Typed {
  const t = text.trim().toLowerCase();
  if (['true', 'yes', 'on'].includes(t)) return { ok: true, value: true };
  if (['false', 'no', 'off'].includes(t)) return { ok: true, value: false };
  return {
    ok: false,
    error: `expected a boolean (true, false, yes, no), got '${printable(text)}'`,
  };
}

/** Sizes stay as written (`2GiB`), checked; a bare byte count becomes a number. */
function parseSizeValue(value: string | number): Typed {
  try {
    const bytes = parseSize(value);
    if (typeof value === 'number' || /^\d+$/.test(value.trim())) return { ok: true, value: bytes };
    return { ok: true, value: value.trim() };
  } catch {
    return {
      ok: false,
      error: `expected a size (e.g. 512MiB, 2GiB), got '${printable(String(value))}'`,
    };
  }
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return `'${printable(String(value))}'`;
}
