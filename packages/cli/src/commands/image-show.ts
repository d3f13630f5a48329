import { showImage } from '@imgctl/core/images';
import { stringifyYaml } from '@imgctl/core/yaml-edit';
import type { Handler } from '../command.ts';

export const run: Handler = async ([name], _options, ctx) => {
  const details = await showImage(await ctx.storeDir(), name!);
  const text = [
    stringifyYaml(details.image).trimEnd(),
    '',
    `# records: ${details.records.join(', ') || '(none)'}`,
    `# files: ${details.files.join(', ')}`,
    `# used by systems: ${details.systems.join(', ') || '(none)'}`,
  ].join('\n');
  return { data: details, text };
};
