import { exportImage } from '@imgctl/core/export';
import type { Handler } from '../command.ts';
import { progressLines } from './pack.ts';

export const run: Handler = async ([image, dir], _options, ctx) => {
  const progress = progressLines(ctx, `exporting ${image}`);
  const result = await exportImage(await ctx.storeDir(), image!, dir!, { onProgress: progress });
  for (const s of result.skipped) ctx.log(`note: disk '${s.id}' not written: ${s.reason}`);
  return {
    data: result,
    text: `exported image '${result.image}' to ${result.dir}: ${result.files.length} files, disks ${
      result.disks.map((d) => d.file).join(', ') || 'none'
    }`,
  };
};
