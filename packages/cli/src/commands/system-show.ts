import { findSystem } from '@imgctl/core/systems';
import { stringifyYaml } from '@imgctl/core/yaml-edit';
import type { Handler } from '../command.ts';

export const run: Handler = async ([key], _options, ctx) => {
  const doc = await findSystem(await ctx.storeDir(), key!);
  return { data: doc, text: stringifyYaml(doc) };
};
