import { showImageRedacted } from '@imgctl/core/plan/redact';
import { stringifyYaml } from '@imgctl/core/yaml/yaml-edit';
import type { Handler } from '../command.ts';

export const run: Handler = async ([name], _options, ctx) => {
  const details = await showImageRedacted(await ctx.storeDir(), name!);
  const text = [
    stringifyYaml(details.image).trimEnd(),
    '',
    `# records: ${details.records.join(', ') || '(none)'}`,
    `# files: ${details.files.join(', ')}`,
    `# used by systems: ${details.systems.join(', ') || '(none)'}`,
  ].join('\n');
  return { data: details, text };
};
