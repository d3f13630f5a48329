import { removeImage } from '@imgctl/core/store/images';
import type { Handler } from '../command.ts';
import type { RemoveOptions } from './options.ts';

export const run: Handler<RemoveOptions> = async ([name], options, ctx) => {
  const result = await removeImage(await ctx.storeDir(), name!, { force: Boolean(options.force) });
  const note =
    result.usedBy.length > 0 ? ` (still named by systems: ${result.usedBy.join(', ')})` : '';
  return { data: result, text: `removed image '${result.image}'${note}` };
};
