import { showRecord } from '@imgctl/core/records';
import { recordForDisplay } from '@imgctl/core/redact';
import { stringifyYaml } from '@imgctl/core/yaml-edit';
import type { Handler } from '../command.ts';

export const run: Handler = async ([image, record], _options, ctx) => {
  const storeDir = await ctx.storeDir();
  const doc = await recordForDisplay(storeDir, await showRecord(storeDir, image!, record!));
  return { data: doc, text: stringifyYaml(doc) };
};
