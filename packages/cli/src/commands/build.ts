import { join, resolve } from 'node:path';
import { buildImage } from '@imgctl/core/disks/build';
import type { Handler } from '../command.ts';
import { withProgress } from '../progress.ts';

export interface BuildOptions {
  record?: string;
  keepScratch?: boolean;
}

export const run: Handler<BuildOptions> = async ([image], options, ctx) => {
  // One download cache for many stores (CI, tests): $IMGCTL_BUILD_CACHE/IMAGE.
  const cacheRoot = ctx.io.env.IMGCTL_BUILD_CACHE;
  const storeDir = await ctx.storeDir();
  const result = await withProgress(ctx, { linePrefix: 'build' }, (progress) =>
    buildImage(
      storeDir,
      {
        image: image!,
        record: options.record,
        keepScratch: Boolean(options.keepScratch),
        cacheDir: cacheRoot ? join(resolve(ctx.io.cwd, cacheRoot), image!) : undefined,
      },
      {
        onStep: (line) => progress.step(line),
        onLine: (line) => progress.line(line),
        onProgress: (done, total) => progress.bytes(done, total),
      },
    ),
  );
  const disks = result.disks.map(
    (d) =>
      `  ${d.disk.id} (${d.disk.use}, ${d.disk.format}, ${String(d.disk.size)}) sha256 ${d.disk.sha256}`,
  );
  const lines = [
    `built image ${result.image} (record ${result.record}): revision ${result.revision} in ${result.build.duration_s}s`,
    ...disks,
    `log: ${result.log}`,
    ...(result.scratch ? [`scratch kept: ${result.scratch}`] : []),
  ];
  return { data: result, text: lines.join('\n') };
};
