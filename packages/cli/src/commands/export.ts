import { exportImage } from '@imgctl/core/disks/export';
import type { Handler } from '../command.ts';
import { PROGRESS_MIN_BYTES, withProgress } from '../progress.ts';

export const run: Handler = async ([image, dir], _options, ctx) => {
  const storeDir = await ctx.storeDir();
  const result = await withProgress(ctx, { minBytes: PROGRESS_MIN_BYTES }, (progress) => {
    progress.step(`exporting ${image}`);
    return exportImage(storeDir, image!, dir!, { onProgress: (d, t) => progress.bytes(d, t) });
  });
  for (const s of result.skipped) ctx.log(`note: disk '${s.id}' not written: ${s.reason}`);
  return {
    data: result,
    text: `exported image '${result.image}' to ${result.dir}: ${result.files.length} files, disks ${
      result.disks.map((d) => d.file).join(', ') || 'none'
    }`,
  };
};
