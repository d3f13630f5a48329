import { createImage } from '@imgctl/core/store/images';
import type { Handler } from '../command.ts';

export const run: Handler = async ([name], _options, ctx) => {
  const result = await createImage(await ctx.storeDir(), name!);
  return {
    data: result,
    text: `created image '${result.image}': ${result.files.join(', ')}\nnext: add its disk with 'imgctl disk add ${result.image} --id root --use system FILE'`,
  };
};
