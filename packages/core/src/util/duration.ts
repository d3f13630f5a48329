import { ImgctlError } from './errors.ts';
import { printable } from './names.ts';

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** Seconds in a duration like 90s, 15m, 1h or 30d; USAGE for anything else. */
export function parseDuration(text: string, what: string): number {
  const m = /^([1-9][0-9]{0,8})(s|m|h|d)$/.exec(text);
  if (!m)
    throw new ImgctlError('USAGE', `${what}: invalid duration '${printable(text)}'`, {
      hint: 'a duration is a number and a unit: 90s, 15m, 1h or 30d',
    });
  return Number(m[1]) * UNITS[m[2]!]!;
}
