/** The command-line flags of a benchmark, typed by their defaults. */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

type Value = number | string | boolean;

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * One flag per key of `defaults` (`warmupRounds` → `--warmup-rounds`), typed by its default: a
 * number is parsed and must be one, a boolean is a switch, a string is taken as given — and
 * resolved against the working directory when its key is in `paths` (and it is not empty).
 * An unknown flag, a missing value or a bad number throws.
 */
export function benchArgs<T extends Record<string, Value>>(
  argv: string[],
  defaults: T,
  paths: ReadonlyArray<keyof T & string> = [],
): T {
  const options = Object.fromEntries(
    Object.entries(defaults).map(([key, value]) => [
      kebab(key),
      { type: typeof value === 'boolean' ? ('boolean' as const) : ('string' as const) },
    ]),
  );
  const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  const args: Record<string, Value> = { ...defaults };
  for (const key of Object.keys(defaults)) {
    const given = values[kebab(key)];
    if (given === undefined) continue;
    if (typeof defaults[key] === 'number') {
      const n = Number(given);
      if (given === '' || !Number.isFinite(n)) throw new Error(`--${kebab(key)} takes a number`);
      args[key] = n;
    } else if (typeof given === 'string' && (paths as string[]).includes(key) && given !== '') {
      args[key] = resolve(given);
    } else args[key] = given;
  }
  return args as T;
}
