import { join, resolve } from 'node:path';
import { buildRamdisk } from '@imgctl/core/disks/ramdisk';
import { ImgctlError } from '@imgctl/core/util/errors';
import type { Handler } from '../command.ts';
import { withProgress } from '../progress.ts';
import { locateAgentBundle, locateAgentExecutable } from './provision.ts';

export interface RamdiskBuildOptions {
  keepScratch?: boolean;
}

export const run: Handler<RamdiskBuildOptions> = async (_args, options, ctx) => {
  // The agent the ramdisk runs is the one imgctl provision copies to targets without Node.
  const bundle = ctx.io.env.IMGCTL_AGENT_EXECUTABLE ? '' : await locateAgentBundle(ctx.io);
  const agent = await locateAgentExecutable(ctx.io, bundle);
  if ('missing' in agent)
    throw new ImgctlError('NOT_FOUND', `the self-contained agent: ${agent.missing}`, {
      hint: agent.hint,
    });
  // One download cache for many stores (CI, tests): $IMGCTL_BUILD_CACHE/ramdisk.
  const cacheRoot = ctx.io.env.IMGCTL_BUILD_CACHE;
  const storeDir = await ctx.storeDir();
  const result = await withProgress(ctx, { linePrefix: 'ramdisk' }, (progress) =>
    buildRamdisk(
      storeDir,
      {
        agentExecutable: agent.path,
        keepScratch: Boolean(options.keepScratch),
        cacheDir: cacheRoot ? join(resolve(ctx.io.cwd, cacheRoot), 'ramdisk') : undefined,
      },
      {
        onStep: (line) => progress.step(line),
        onLine: (line) => progress.line(line),
        onProgress: (done, total) => progress.bytes(done, total),
      },
    ),
  );
  const { kernel, initrd, cmdline } = result.ramdisk;
  const lines = [
    `${result.changed ? 'built' : 'rebuilt, unchanged:'} the provisioning ramdisk (ramdisk/ramdisk.yaml)`,
    `  kernel   ${kernel.size} bytes  sha256 ${kernel.sha256}`,
    `  initrd   ${initrd.size} bytes  sha256 ${initrd.sha256}`,
    `  cmdline  ${cmdline}`,
    `log: ${result.log}`,
    ...(result.scratch ? [`scratch kept: ${result.scratch}`] : []),
  ];
  return { data: result, text: lines.join('\n') };
};
