import { captureFromDisks, captureFromDomain } from '@imgctl/core/disks/capture';
import { ImgctlError } from '@imgctl/core/util/errors';
import type { Handler } from '../command.ts';

export interface CaptureOptions {
  fromDisk?: string[];
  /** comma-separated, one per --from-disk file */
  use?: string;
  fromDomain?: string;
  connect?: string;
  force?: boolean;
}

export const run: Handler<CaptureOptions> = async ([name], options, ctx) => {
  const disks = options.fromDisk;
  const domain = options.fromDomain;
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
          uses: options.use?.split(','),
        })
      : await captureFromDomain(storeDir, name!, {
          domain: domain!,
          connect: options.connect,
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
