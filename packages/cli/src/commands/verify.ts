import { formatProblem } from '@imgctl/core/yaml/document';
import { ImgctlError } from '@imgctl/core/util/errors';
import { verifyStore } from '@imgctl/core/disks/verify';
import type { Handler } from '../command.ts';

export interface VerifyOptions {
  gc?: boolean;
}

export const run: Handler<VerifyOptions> = async (_args, options, ctx) => {
  const gc = Boolean(options.gc);
  const result = await verifyStore(await ctx.storeDir(), {
    gc,
    onProgress: (done, total) => ctx.log(`rehashed blob ${done} of ${total}`),
  });
  for (const path of result.removed) ctx.log(`removed ${path}`);
  const blobProblems = [
    ...result.blobs.bad.map((path) => `${path}: content does not match its name (corrupted)`),
    ...result.missing.map(
      (m) => `images/${m.image}/image.yaml: disk ${m.disk}: blob ${m.sha256} is missing`,
    ),
    ...result.releases.missing.map(
      (m) => `releases/${m.release.replace('@', '/')}: disk ${m.disk}: blob ${m.sha256} is missing`,
    ),
  ];
  const releaseProblems = result.releases.changed.map(
    (c) =>
      `releases/${c.release.replace('@', '/')}/${c.file}: not what release ${c.release} recorded (changed, added or removed)`,
  );
  const corrupt = [...blobProblems, ...releaseProblems];
  const details = [...corrupt, ...result.problems.map(formatProblem)];
  if (details.length > 0) {
    const hints = [
      blobProblems.length > 0 &&
        "add the disks named above again ('imgctl disk add'), or restore .blobs/ from a backup",
      releaseProblems.length > 0 &&
        'a release never changes: restore the files named above from a backup or git',
      result.problems.length > 0 && 'fix the files named above; every problem is listed',
    ];
    throw new ImgctlError(
      corrupt.length > 0 ? 'INTEGRITY' : 'VALIDATION',
      `${corrupt.length} integrity problem(s), ${result.problems.length} invalid file problem(s)`,
      { details, hint: hints.filter(Boolean).join('; ') },
    );
  }
  const { images, records, systems, releases } = result.counts;
  const removed = gc ? `; removed ${result.removed.length} unused file(s)` : '';
  return {
    data: { ok: true, ...result },
    text: `ok: ${result.blobs.checked} blob(s) match their sha256, ${images} image(s), ${records} record(s), ${systems} system(s), ${releases} release(s) valid${removed}`,
  };
};
