import { ImgctlError } from '@imgctl/core/util/errors';
import { addSystem } from '@imgctl/core/store/systems';
import type { Handler } from '../command.ts';

export const run: Handler = async ([name], options, ctx) => {
  if (typeof options.image !== 'string') {
    throw new ImgctlError('USAGE', '--image is required', {
      hint: `imgctl system add ${name} --image IMAGE`,
    });
  }
  const result = await addSystem(await ctx.storeDir(), name!, {
    image: options.image,
    record: options.record as string | undefined,
    hostname: options.hostname as string | undefined,
    address: options.address as string | undefined,
    interfaces: options.interface as string[] | undefined,
    sshKeys: options.sshKey as string[] | undefined,
    params: options.param as string[] | undefined,
    targetDisk: options.targetDisk as string | undefined,
    description: options.description as string | undefined,
  });
  return { data: result, text: `added ${result.file}` };
};
