import { addDisk } from '@imgctl/core/disks';
import { ImgctlError } from '@imgctl/core/errors';
import type { Handler } from '../command.ts';

export const run: Handler = async ([image, file], options, ctx) => {
  const id = options.id as string | undefined;
  const use = options.use as string | undefined;
  if (id === undefined || use === undefined) {
    throw new ImgctlError('USAGE', 'disk add needs --id ID and --use system|data|scratch', {
      hint: 'imgctl disk add IMAGE --id root --use system FILE',
    });
  }
  const source = file ?? (options.url as string | undefined) ?? `an empty ${use} disk`;
  ctx.log(`disk ${id}: adding ${source}`);
  const result = await addDisk(
    await ctx.storeDir(),
    {
      image: image!,
      id,
      use: use as 'system' | 'data' | 'scratch',
      file,
      url: options.url as string | undefined,
      keep: Boolean(options.keep),
      size: options.size as string | undefined,
      format: options.format as string | undefined,
    },
    { onProgress: progressLogger(`disk ${id}`, ctx.log) },
  );
  const { disk } = result;
  const content = disk.sha256
    ? ` sha256 ${disk.sha256}${result.blob?.reused ? ' (content already in the store)' : ''}`
    : '';
  const change = result.changed
    ? `revision ${result.revision}`
    : `unchanged, revision ${result.revision}`;
  return {
    data: result,
    text: `image ${result.image}: disk ${disk.id} (${disk.use}, ${disk.format}, ${String(disk.size)})${content}; ${change}`,
  };
};

/**
 * Plain progress lines for long copies and hashes: one every 10% or every 5 seconds, whichever
 * comes first (a log file stays short, a person still sees it move).
 */
export function progressLogger(
  label: string,
  log: (line: string) => void,
  now: () => number = Date.now,
): (done: number, total: number) => void {
  let lastStep = 0;
  let lastTime = now();
  return (done, total) => {
    const known = Number.isFinite(total) && total > 0;
    const step = known ? Math.floor((done / total) * 10) : 0;
    const time = now();
    if ((known && step > lastStep) || time - lastTime >= 5000) {
      lastStep = step;
      lastTime = time;
      log(
        known
          ? `${label}: ${Math.floor((done / total) * 100)}% (${human(done)} of ${human(total)})`
          : `${label}: ${human(done)}`,
      );
    }
  };
}

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
