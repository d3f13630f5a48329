import { ImgctlError } from '@imgctl/core/util/errors';
import { printable } from '@imgctl/core/util/names';
import type { Handler } from '../command.ts';
import { withdraw } from './release-withdraw.ts';

export interface ReleaseRevokeOptions {
  reason?: string;
}

export const run: Handler<ReleaseRevokeOptions> = async ([ref], options, ctx) => {
  if (!options.reason?.trim())
    throw new ImgctlError('USAGE', 'release revoke needs --reason TEXT', {
      hint: `the reason is what a refused plan says: imgctl release revoke ${printable(ref!)} --reason "CVE-2026-1234"`,
    });
  return withdraw(await ctx.storeDir(), ref!, 'revoke', options.reason);
};
