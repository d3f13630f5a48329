import { createRelease } from '@imgctl/core/store/releases';
import type { Handler } from '../command.ts';

export interface ReleaseCreateOptions {
  channel?: string[];
}

export const run: Handler<ReleaseCreateOptions> = async ([image], options, ctx) => {
  const result = await createRelease(await ctx.storeDir(), image!, {
    channels: options.channel ?? [],
  });
  const channels = result.channels.length > 0 ? ` (channels: ${result.channels.join(', ')})` : '';
  return { data: result, text: `released ${result.ref}${channels}` };
};
