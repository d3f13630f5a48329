import type { ImageDetails } from '@imgctl/core/store/images';
import { redactPlan } from '@imgctl/core/plan/plan';
import { ImgctlError } from '@imgctl/core/util/errors';
import { planQuery } from '../flags.ts';
import type { ActionContext, ActionResult } from './action.ts';

/** --display: an image (and a record of it), or with --system the plan the server resolves. */
export async function run({ flags, client }: ActionContext): Promise<ActionResult> {
  if (flags.system !== undefined || flags.set.length > 0 || flags.virtName !== undefined) {
    const { plan } = await client.getPlan(planQuery(flags));
    const shown = redactPlan(plan);
    return { data: shown, text: JSON.stringify(shown, null, 2) };
  }
  if (flags.image === undefined)
    throw new ImgctlError('USAGE', '--display needs --image or --system');
  const details = await client.getImage(flags.image);
  const record = flags.record ? await client.getRecord(flags.image, flags.record) : undefined;
  const lines = describeImage(details);
  if (record) lines.push(`record ${record.name}:`, JSON.stringify(record.provision ?? {}, null, 2));
  return { data: record ? { ...details, record } : details, text: lines.join('\n') };
}

function describeImage(details: ImageDetails): string[] {
  const image = details.image;
  return [
    `image:    ${image.name}@${image.revision}${image.label ? `  ${image.label}` : ''}`,
    ...(image.description ? [`          ${image.description}`] : []),
    `records:  ${details.records.join(', ')}`,
    `systems:  ${details.systems.join(', ') || '-'}`,
    `devices:  ${image.devices.vcpus} vCPU, ${image.devices.memory}, graphics ${image.devices.graphics ?? 'none'}`,
    'disks:',
    ...image.disks.map(
      (d) =>
        `  ${d.id.padEnd(10)} ${d.use.padEnd(8)} ${d.format.padEnd(6)} ${String(d.size).padEnd(8)} ${d.sha256 ? `sha256:${d.sha256.slice(0, 12)}` : '(no content)'}`,
    ),
  ];
}
