import type { Handler } from '../command.ts';
import { withdraw } from './release-withdraw.ts';

export interface ReleaseDeprecateOptions {
  reason?: string;
}

export const run: Handler<ReleaseDeprecateOptions> = async ([ref], options, ctx) =>
  withdraw(await ctx.storeDir(), ref!, 'deprecate', options.reason);
