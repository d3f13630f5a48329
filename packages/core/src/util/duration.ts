import { ImgctlError } from './errors.ts';
import { printable } from './names.ts';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `500ms`, `90s`, `10m`, `2h`, `30d`, or a bare number of seconds, in milliseconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) {
    throw new ImgctlError('USAGE', `${what} '${printable(text)}' is not a duration`, {
      hint: 'e.g. 90s, 10m, 2h, 30d',
    });
  }
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']!);
}
