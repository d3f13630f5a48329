import { addRecord } from '@imgctl/core/store/records';
import type { Handler } from '../command.ts';
import { integerOption } from './options.ts';

export interface RecordAddOptions {
  from?: string;
  description?: string;
  vcpus?: string;
  memory?: string;
  diskSize?: string[];
  param?: string[];
}

export const run: Handler<RecordAddOptions> = async ([image, record], options, ctx) => {
  const result = await addRecord(await ctx.storeDir(), image!, record!, {
    from: options.from,
    description: options.description,
    vcpus: integerOption(options.vcpus, '--vcpus'),
    memory: options.memory,
    diskSizes: options.diskSize,
    params: options.param,
  });
  return { data: result, text: `added ${result.file}` };
};
