import { addRecord } from '@imgctl/core/store/records';
import type { Handler } from '../command.ts';
import { integerOption } from './options.ts';

export const run: Handler = async ([image, record], options, ctx) => {
  const result = await addRecord(await ctx.storeDir(), image!, record!, {
    from: options.from as string | undefined,
    description: options.description as string | undefined,
    vcpus: integerOption(options.vcpus, '--vcpus'),
    memory: options.memory as string | undefined,
    diskSizes: options.diskSize as string[] | undefined,
    params: options.param as string[] | undefined,
  });
  return { data: result, text: `added ${result.file}` };
};
