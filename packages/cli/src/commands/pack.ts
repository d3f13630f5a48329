import { formatSize } from '@imgctl/core/sizes';
import { packImage } from '@imgctl/core/pack';
import { ImgctlError } from '@imgctl/core/errors';
import type { Context, Handler } from '../command.ts';

/** A progress callback printing a plain line at most every 10% (silent with --json). */
export function progressLines(ctx: Context, label: string): (done: number, total?: number) => void {
  let next = 0;
  return (done, total) => {
    if (!total || total < 64 * 1024 * 1024) return;
    const percent = Math.floor((done / total) * 100);
    if (percent < next) return;
    next = percent - (percent % 10) + 10;
    ctx.log(`${label}: ${percent}% of ${formatSize(total)}`);
  };
}

export const run: Handler = async ([image], options, ctx) => {
  if (typeof options.output !== 'string') {
    throw new ImgctlError('USAGE', 'pack needs -o FILE (FILE.tar, FILE.tar.gz or FILE.tar.zst)');
  }
  const progress = progressLines(ctx, `packing ${image}`);
  const result = await packImage(await ctx.storeDir(), image!, options.output, {
    onProgress: (p) => progress(p.done, p.total),
  });
  return {
    data: result,
    text: `packed image '${result.image}' revision ${result.revision} into ${result.output} (${result.files} files, ${result.blobs} disk blobs, ${formatSize(result.bytes)})`,
  };
};
