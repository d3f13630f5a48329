import { captureFromDisks, captureFromDomain } from '@imgctl/core/disks/capture';
import { ImgctlError } from '@imgctl/core/util/errors';
import type { Handler } from '../command.ts';

export const run: Handler = async ([name], options, ctx) => {
  const disks = options.fromDisk as string[] | undefined;
  const domain = options.fromDomain as string | undefined;
  if ((disks === undefined) === (domain === undefined)) {
    throw new ImgctlError(
      'USAGE',
      'capture needs either --from-disk FILE... or --from-domain DOMAIN',
    );
  }
  const storeDir = await ctx.storeDir();
  const result =
    disks !== undefined
      ? await captureFromDisks(storeDir, name!, {
          files: disks,
          uses: typeof options.use === 'string' ? options.use.split(',') : undefined,
        })
      : await captureFromDomain(storeDir, name!, {
          domain: domain!,
          connect: options.connect as string | undefined,
          force: Boolean(options.force),
        });
  for (const note of result.notReplicated) ctx.log(`warning: ${note}`);
  return {
    data: result,
    text: `captured image '${result.image}': ${result.disks
      .map((d) => `${d.id} (${d.use}, ${d.format})`)
      .join(', ')}`,
  };
};
