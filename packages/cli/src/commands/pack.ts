import { ImgctlError } from '@imgctl/core/util/errors';
import { packImage } from '@imgctl/core/disks/pack';
import { humanSize } from '@imgctl/core/util/sizes';
import type { Handler } from '../command.ts';
import { PROGRESS_MIN_BYTES, withProgress } from '../progress.ts';

/** Packs and imports smaller than this show no percentages: they are over in a moment. */

export interface PackOptions {
  output?: string;
}

export const run: Handler<PackOptions> = async ([image], options, ctx) => {
  const { output } = options;
  if (output === undefined) {
    throw new ImgctlError('USAGE', 'pack needs -o FILE (FILE.tar, FILE.tar.gz or FILE.tar.zst)');
  }
  const storeDir = await ctx.storeDir();
  const result = await withProgress(ctx, { minBytes: PROGRESS_MIN_BYTES }, (progress) => {
    progress.step(`packing ${image}`);
    return packImage(storeDir, image!, output, {
      onProgress: (p) => progress.bytes(p.done, p.total),
    });
  });
  return {
    data: result,
    text: `packed image '${result.image}' revision ${result.revision} into ${result.output} (${result.files} files, ${result.blobs} disk blobs, ${humanSize(result.bytes)})`,
  };
};
