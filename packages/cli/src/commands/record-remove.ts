import { removeRecord } from '@imgctl/core/store/records';
import type { Handler } from '../command.ts';
import type { RemoveOptions } from './options.ts';

export const run: Handler<RemoveOptions> = async ([image, record], options, ctx) => {
  const result = await removeRecord(await ctx.storeDir(), image!, record!, {
    force: Boolean(options.force),
  });
  return { data: result, text: `removed ${result.file}` };
};
