import { systemProbe } from '@imgctl/core/agent/host-check';
import { provisionVirt, type VirtResult } from '@imgctl/core/agent/virt';
import { ImgctlError } from '@imgctl/core/util/errors';
import { formatSize } from '@imgctl/core/util/sizes';
import { planQuery, virtHostFlags } from '../flags.ts';
import { type ActionContext, type ActionResult, agentDeps } from './action.ts';

/** --virt: a VM through libvirt from the image (or with --dry-run, what it would be). */
export async function run(ctx: ActionContext): Promise<ActionResult> {
  const { flags, abs } = ctx;
  if (flags.image === undefined && flags.system === undefined)
    throw new ImgctlError('USAGE', '--virt needs --image or --system');
  const deps = agentDeps(ctx);
  const virt = await provisionVirt(
    {
      ...planQuery(flags),
      virtPath: abs(flags.virtPath),
      ...virtHostFlags(flags, abs),
      follow: flags.follow,
      noStart: !flags.start,
      autostart: flags.autostart,
      dryRun: flags.dryRun,
      printXml: flags.printXml,
      force: flags.force,
      keepOnFailure: flags.keepOnFailure,
    },
    {
      ...deps,
      client: ctx.client,
      probe: systemProbe((file, args) => deps.runner.run(file, args)),
    },
  );
  return { data: virt, text: flags.printXml ? virt.xml : describeVirt(virt) };
}

function describeVirt(v: VirtResult): string {
  const state = v.dryRun
    ? 'would be defined (dry run: nothing was changed)'
    : `defined${v.started ? ' and started' : ''}${v.autostart ? ', autostart on' : ''}`;
  const lines = [
    `VM ${v.vm}: ${v.image} (record ${v.record}${v.system ? `, system ${v.system}` : ''}) ${state}`,
    `  hostname     ${v.hostname}`,
    `  instance-id  ${v.instanceId}`,
    `  domain type  ${v.virtType}`,
    ...v.disks.map(
      (d) =>
        `  disk ${d.id.padEnd(7)} ${d.path} (${d.target}, ${d.format} ${formatSize(d.size)}${d.use === 'system' ? ', overlay on the cached base' : d.use === 'data' ? ', copy' : ', empty'})`,
    ),
    `  seed         ${v.seed}`,
    `  serial log   ${v.serialLog}`,
    `  log          ${v.logFile}`,
  ];
  if (v.dryRun) lines.push('', v.xml.trimEnd());
  return lines.join('\n');
}
