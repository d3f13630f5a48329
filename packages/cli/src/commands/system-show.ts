import { findSystemRedacted } from '@imgctl/core/plan/redact';
import { stringifyYaml } from '@imgctl/core/yaml/yaml-edit';
import type { Handler } from '../command.ts';

export const run: Handler = async ([key], _options, ctx) => {
  const storeDir = await ctx.storeDir();
  const doc = await findSystemRedacted(storeDir, key!);
  return { data: doc, text: stringifyYaml(doc) };
};
