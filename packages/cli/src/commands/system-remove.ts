import { removeSystem } from '@imgctl/core/store/systems';
import type { Handler } from '../command.ts';

export const run: Handler = async ([name], _options, ctx) => {
  const result = await removeSystem(await ctx.storeDir(), name!);
  return { data: result, text: `removed ${result.file}` };
};
