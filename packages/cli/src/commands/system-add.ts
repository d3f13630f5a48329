import { ImgctlError } from '@imgctl/core/util/errors';
import { addSystem } from '@imgctl/core/store/systems';
import type { Handler } from '../command.ts';

export interface SystemAddOptions {
  image?: string;
  record?: string;
  hostname?: string;
  address?: string;
  interface?: string[];
  sshKey?: string[];
  param?: string[];
  targetDisk?: string;
  description?: string;
}

export const run: Handler<SystemAddOptions> = async ([name], options, ctx) => {
  if (options.image === undefined) {
    throw new ImgctlError('USAGE', '--image is required', {
      hint: `imgctl system add ${name} --image IMAGE`,
    });
  }
  const result = await addSystem(await ctx.storeDir(), name!, {
    image: options.image,
    record: options.record,
    hostname: options.hostname,
    address: options.address,
    interfaces: options.interface,
    sshKeys: options.sshKey,
    params: options.param,
    targetDisk: options.targetDisk,
    description: options.description,
  });
  return { data: result, text: `added ${result.file}` };
};
