import { initStore } from '@imgctl/core/store/images';
import type { Handler } from '../command.ts';

export interface InitOptions {
  name?: string;
}

export const run: Handler<InitOptions> = async ([dir], options, ctx) => {
  const { resolve } = await import('node:path');
  const result = await initStore(resolve(ctx.io.cwd, dir ?? '.'), {
    name: options.name,
  });
  return {
    data: result,
    text: `created an image store in ${result.storeDir}\nnext: cd ${result.storeDir} && imgctl image create NAME`,
  };
};
