import { showRecordRedacted } from '@imgctl/core/plan/redact';
import { stringifyYaml } from '@imgctl/core/yaml/yaml-edit';
import type { Handler } from '../command.ts';

export const run: Handler = async ([image, record], _options, ctx) => {
  const storeDir = await ctx.storeDir();
  const doc = await showRecordRedacted(storeDir, image!, record!);
  return { data: doc, text: stringifyYaml(doc) };
};
