import { showRecord } from '@imgctl/core/records';
import { stringifyYaml } from '@imgctl/core/yaml-edit';
import type { Handler } from '../command.ts';

export const run: Handler = async ([image, record], _options, ctx) => {
  const doc = await showRecord(await ctx.storeDir(), image!, record!);
  return { data: doc, text: stringifyYaml(doc) };
};
