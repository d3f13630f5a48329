import { listImages } from '@imgctl/core/store/images';
import type { Handler } from '../command.ts';
import { renderTable } from '@imgctl/core/util/output';

export const run: Handler = async (_args, _options, ctx) => {
  const images = await listImages(await ctx.storeDir());
  const text =
    images.length === 0
      ? 'no images yet; create one with: imgctl image create NAME'
      : renderTable(
          ['name', 'rev', 'os', 'disks', 'records', 'label'],
          images.map((i) => [
            i.name,
            String(i.revision ?? '?'),
            i.os ?? '-',
            String(i.disks),
            i.records.join(',') || '-',
            i.label ?? '',
          ]),
        );
  return { data: images, text };
};
