import { ImgctlError } from '@imgctl/core/util/errors';
import { renderImageFile } from '@imgctl/core/plan/image-files';
import { redactPlan, resolvePlan } from '@imgctl/core/plan/plan';
import { findSystem } from '@imgctl/core/store/systems';
import { stringifyYaml } from '@imgctl/core/yaml/yaml-edit';
import type { Handler } from '../command.ts';

const RENDERABLE = ['kickstart'] as const;

export const run: Handler = async ([image], options, ctx) => {
  const storeDir = await ctx.storeDir();
  const render = options.render as string | undefined;
  if (render !== undefined && !RENDERABLE.includes(render as (typeof RENDERABLE)[number])) {
    throw new ImgctlError('USAGE', `--render takes one of: ${RENDERABLE.join(', ')}`);
  }
  // --system accepts a MAC address or hostname too; the plan itself names systems.
  const system =
    typeof options.system === 'string'
      ? (await findSystem(storeDir, options.system)).name
      : undefined;
  const plan = await resolvePlan(storeDir, {
    image: image!,
    record: options.record as string | undefined,
    system,
    sets: (options.set as string[] | undefined) ?? [],
    vmName: options.vmName as string | undefined,
  });
  if (render !== undefined) {
    const rendered = await renderImageFile(storeDir, plan, 'kickstart');
    return { data: { file: render, content: rendered }, text: rendered };
  }
  const shown = redactPlan(plan);
  return { data: shown, text: stringifyYaml(shown) };
};
