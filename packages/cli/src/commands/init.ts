import { initStore } from '@imgctl/core/store/images';
import type { Handler } from '../command.ts';

export const run: Handler = async ([dir], options, ctx) => {
  const { resolve } = await import('node:path');
  const result = await initStore(resolve(ctx.io.cwd, dir ?? '.'), {
    name: options.name as string | undefined,
  });
  return {
    data: result,
    text: `created an image store in ${result.storeDir}\nnext: cd ${result.storeDir} && imgctl image create NAME`,
  };
};
