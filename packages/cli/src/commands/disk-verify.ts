import { verifyDisks } from '@imgctl/core/disks/disks';
import { ImgctlError } from '@imgctl/core/util/errors';
import type { Handler } from '../command.ts';

export const run: Handler = async ([image], _options, ctx) => {
  const checks = await verifyDisks(await ctx.storeDir(), image!, {
    onDisk: (id) => ctx.log(`disk ${id}: rehashing`),
  });
  const bad = checks.filter((c) => !c.ok);
  if (bad.length > 0) {
    throw new ImgctlError(
      'INTEGRITY',
      `image ${image}: ${bad.length} of ${checks.length} disk(s) failed verification`,
      {
        details: bad.map((c) => `disk ${c.id}: sha256 ${c.sha256}: ${c.problem}`),
        hint: "add the disk again from its source ('imgctl disk add'), or restore .blobs/ from a backup",
      },
    );
  }
  const lines = checks.map((c) =>
    c.checked
      ? `disk ${c.id}: ok (sha256 ${c.sha256})`
      : `disk ${c.id}: ${c.problem ?? 'scratch, nothing to check'}`,
  );
  return { data: { image, ok: true, disks: checks }, text: lines.join('\n') };
};
