import { ImgctlError } from '@imgctl/core/util/errors';

export function integerOption(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new ImgctlError('USAGE', `${flag} takes a positive whole number, got '${String(value)}'`);
  }
  return n;
}

/** The options of `image remove` and `record remove`. */
export interface RemoveOptions {
  /** remove even when systems use it */
  force?: boolean;
}
