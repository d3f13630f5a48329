import { addDisk } from '@imgctl/core/disks/disks';
import type { DiskUse } from '@imgctl/core/store/types';
import { ImgctlError } from '@imgctl/core/util/errors';
import type { Handler } from '../command.ts';
import { withProgress } from '../progress.ts';

export interface DiskAddOptions {
  id?: string;
  use?: string;
  url?: string;
  keep?: boolean;
  keepRaw?: boolean;
  size?: string;
  format?: string;
}

export const run: Handler<DiskAddOptions> = async ([image, file], options, ctx) => {
  const { id, use } = options;
  if (id === undefined || use === undefined) {
    throw new ImgctlError('USAGE', 'disk add needs --id ID and --use system|data|scratch', {
      hint: 'imgctl disk add IMAGE --id root --use system FILE',
    });
  }
  const source = file ?? options.url ?? `an empty ${use} disk`;
  const storeDir = await ctx.storeDir();
  const result = await withProgress(ctx, {}, (progress) => {
    progress.step(`disk ${id}: adding ${source}`);
    return addDisk(
      storeDir,
      {
        image: image!,
        id,
        // addDisk refuses any other use as a usage error, naming it
        use: use as DiskUse,
        file,
        url: options.url,
        keep: Boolean(options.keep),
        size: options.size,
        format: options.format,
        keepRaw: Boolean(options.keepRaw),
      },
      {
        onProgress: (done, total) => progress.bytes(done, total),
        onConvert: (reason) => progress.step(`disk ${id}: storing as qcow2: ${reason}`),
      },
    );
  });
  const { disk } = result;
  const content = disk.sha256
    ? ` sha256 ${disk.sha256}${result.blob?.reused ? ' (content already in the store)' : ''}`
    : '';
  const change = result.changed
    ? `revision ${result.revision}`
    : `unchanged, revision ${result.revision}`;
  const converted = result.converted
    ? `\nstored as ${result.converted.to}, not ${result.converted.from}: ${result.converted.reason}`
    : '';
  return {
    data: result,
    text: `image ${result.image}: disk ${disk.id} (${disk.use}, ${disk.format}, ${String(disk.size)})${content}; ${change}${converted}`,
  };
};
