import { copyImage } from '@imgctl/core/store/images';
import type { Handler } from '../command.ts';

export const run: Handler = async ([source, target], _options, ctx) => {
  const result = await copyImage(await ctx.storeDir(), source!, target!);
  return {
    data: result,
    text: `created image '${result.image}' like '${result.parent}' (${result.files.length} files)`,
  };
};
