import { ImgctlError } from '@imgctl/core/util/errors';
import { renderImageFile } from '@imgctl/core/plan/image-files';
import { redactPlan, resolvePlan } from '@imgctl/core/plan/plan';
import { findSystem } from '@imgctl/core/store/systems';
import { stringifyYaml } from '@imgctl/core/yaml/yaml-edit';
import type { Handler } from '../command.ts';

const RENDERABLE: readonly string[] = ['kickstart'];

export interface PlanOptions {
  record?: string;
  /** a name, MAC address or hostname */
  system?: string;
  set?: string[];
  vmName?: string;
  render?: string;
}

export const run: Handler<PlanOptions> = async ([image], options, ctx) => {
  const storeDir = await ctx.storeDir();
  const { render } = options;
  if (render !== undefined && !RENDERABLE.includes(render)) {
    throw new ImgctlError('USAGE', `--render takes one of: ${RENDERABLE.join(', ')}`);
  }
  // --system accepts a MAC address or hostname too; the plan itself names systems.
  const system =
    options.system === undefined ? undefined : (await findSystem(storeDir, options.system)).name;
  const plan = await resolvePlan(storeDir, {
    image: image!,
    record: options.record,
    system,
    sets: options.set ?? [],
    vmName: options.vmName,
  });
  if (render !== undefined) {
    const rendered = await renderImageFile(storeDir, plan, 'kickstart');
    return { data: { file: render, content: rendered }, text: rendered };
  }
  const shown = redactPlan(plan);
  return { data: shown, text: stringifyYaml(shown) };
};
