import { readFile } from 'node:fs/promises';
import {
  type BootAction,
  replaceSelf,
  type ReplaceSelfResult,
} from '@imgctl/core/agent/replace-self';
import { ImgctlError } from '@imgctl/core/util/errors';
import { isValidName } from '@imgctl/core/util/names';
import { formatSize } from '@imgctl/core/util/sizes';
import { type Flags, planQuery } from '../flags.ts';
import { type ActionContext, type ActionResult, agentDeps } from './action.ts';

/** --replace-self: the image written over a disk of this machine, configured for first boot. */
export async function run(ctx: ActionContext): Promise<ActionResult> {
  const { flags, abs } = ctx;
  const replaced = await replaceSelf(
    {
      ...planQuery(flags),
      targetDisk: flags.targetDisk === undefined ? undefined : abs(flags.targetDisk),
      dataDisks: dataDiskFlags(flags.dataDisk, abs),
      cacheDir: abs(flags.cacheDir),
      logDir: abs(flags.logDir),
      boot: bootFlag(flags),
      dryRun: flags.dryRun,
      force: flags.force,
      update: flags.update,
      viaRamdisk: flags.viaRamdisk,
      trustKey: flags.trust === undefined ? undefined : await readFile(abs(flags.trust), 'utf8'),
    },
    { ...agentDeps(ctx), client: ctx.client },
  );
  // --json prints one document: on a refused dry run, the error (which names the content).
  if (replaced.refused && flags.json) throw replaced.refused;
  return { data: replaced, text: describeReplaced(replaced), failure: replaced.refused };
}

function dataDiskFlags(values: string[], abs: (p: string) => string): Record<string, string> {
  const disks: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    const id = value.slice(0, eq);
    if (eq <= 0 || eq === value.length - 1 || !isValidName(id))
      throw new ImgctlError('USAGE', `--data-disk: expected ID=DEV, got '${value.slice(0, 200)}'`, {
        hint: 'e.g. --data-disk data=/dev/sdc',
      });
    if (disks[id] !== undefined) throw new ImgctlError('USAGE', `--data-disk ${id} given twice`);
    disks[id] = abs(value.slice(eq + 1));
  }
  return disks;
}

function bootFlag(flags: Flags): BootAction {
  if (flags.kexec && flags.reboot)
    throw new ImgctlError('USAGE', 'give only one of --reboot, --kexec, --no-reboot');
  if (flags.kexec) return 'kexec';
  return flags.reboot ? 'reboot' : 'none';
}

function describeReplaced(r: ReplaceSelfResult): string {
  const lines = [
    `${r.target}: ${r.image} (record ${r.record}${r.system ? `, system ${r.system}` : ''}) ${r.dryRun ? `would be ${r.refused ? 'refused' : 'written'} (dry run: nothing was changed)` : 'written and verified'}`,
    `  hostname     ${r.hostname}`,
    `  instance-id  ${r.dryRun ? '(new on every run)' : r.instanceId}`,
  ];
  for (const d of r.disks) {
    if (d.skipped) {
      lines.push(`  disk ${d.id.padEnd(7)} skipped: ${d.skipped}`);
      continue;
    }
    const how = d.method === 'stream' ? 'streamed raw' : `${d.format}, converted to raw`;
    lines.push(
      `  disk ${d.id.padEnd(7)} ${d.target} (${formatSize(d.targetSize ?? 0)}): sha256:${d.sha256?.slice(0, 12)} ${formatSize(d.size)}, ${how}${d.skippedZeros ? `, ${formatSize(d.skippedZeros)} of zeros skipped` : ''}`,
      `               on it ${r.dryRun ? 'now' : 'before'}: ${d.before?.length ? d.before.join('; ') : 'nothing recognisable'}`,
    );
  }
  lines.push(
    r.configPartition
      ? `  config       partition ${r.configPartition.number} of the ${r.configPartition.table} table: vfat 'cidata', ${formatSize(r.configPartition.size)}, the NoCloud seed`
      : `  config       a vfat 'cidata' partition after the image's, holding the NoCloud seed`,
  );
  if (!r.dryRun) lines.push(`  log          ${r.logFile}`);
  lines.push(`  next boot    ${r.boot.message}`);
  return lines.join('\n');
}
