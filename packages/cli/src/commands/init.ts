import { resolve } from 'node:path';
import { initStore } from '@imgctl/core/store/images';
import { ImgctlError } from '@imgctl/core/util/errors';
import type { Handler } from '../command.ts';

export interface InitOptions {
  name?: string;
  /** the global --store: where to create the store when no DIR is given */
  store?: string;
}

export const run: Handler<InitOptions> = async ([dir], options, ctx) => {
  const at = (path: string) => resolve(ctx.io.cwd, path);
  if (dir !== undefined && options.store !== undefined && at(dir) !== at(options.store))
    throw new ImgctlError(
      'USAGE',
      `init was given two places: ${dir} and --store ${options.store}`,
      { hint: 'give one of them' },
    );
  const result = await initStore(at(dir ?? options.store ?? '.'), { name: options.name });
  return {
    data: result,
    text: `created an image store in ${result.storeDir}\nnext: cd ${result.storeDir} && imgctl image create NAME`,
  };
};
