import { ImgctlError } from '@imgctl/core/util/errors';
import { importArchive } from '@imgctl/core/disks/import';
import { humanSize } from '@imgctl/core/util/sizes';
import { importVirtImage } from '@imgctl/core/disks/virt-image';
import type { Handler } from '../command.ts';
import { PROGRESS_MIN_BYTES, withProgress } from '../progress.ts';
import { type RegistryFlags, registryOptions } from './push.ts';

export interface ImportOptions extends RegistryFlags {
  as?: string;
  force?: boolean;
  /** 'archive' (the default) or 'virt-image' */
  from?: string;
}

export const run: Handler<ImportOptions> = async ([source], options, ctx) => {
  const { from = 'archive', as } = options;
  const force = Boolean(options.force);
  if (from === 'virt-image') {
    const result = await importVirtImage(await ctx.storeDir(), source!, { as, force });
    for (const note of result.notReplicated) ctx.log(`warning: ${note}`);
    return {
      data: result,
      text: `imported image '${result.image}' from ${result.source} (${result.disks.length} disks${
        result.notReplicated.length > 0
          ? `; ${result.notReplicated.length} thing(s) not representable, listed above`
          : ''
      })`,
    };
  }
  if (from !== 'archive') {
    throw new ImgctlError('USAGE', `--from takes 'archive' or 'virt-image', not '${from}'`);
  }
  const storeDir = await ctx.storeDir();
  const result = await withProgress(ctx, { minBytes: PROGRESS_MIN_BYTES }, (progress) => {
    progress.step(`importing ${source}`);
    return importArchive(storeDir, source!, {
      as,
      force,
      ...(source!.startsWith('oci://') ? { registry: registryOptions(options, ctx) } : {}),
      onProgress: (p) => progress.bytes(p.done, p.total ?? Number.NaN),
    });
  });
  const reused = result.blobsReused > 0 ? `, ${result.blobsReused} already in the store` : '';
  return {
    data: result,
    text: `imported image '${result.image}' revision ${result.revision}${
      result.replaced ? ' (replaced the previous one)' : ''
    }: ${result.files} files, ${result.blobs} disk blobs${reused}, ${humanSize(result.bytes)}${
      result.digest ? ` (manifest ${result.digest})` : ''
    }`,
  };
};
