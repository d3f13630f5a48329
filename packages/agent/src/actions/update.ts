import { systemProbe } from '@imgctl/core/agent/host-check';
import {
  rollbackVirt,
  updateVirt,
  type UpdateResult,
  type GenerationSummary,
} from '@imgctl/core/agent/vm-update';
import { parseDuration } from '@imgctl/core/util/duration';
import { ImgctlError } from '@imgctl/core/util/errors';
import { formatSize } from '@imgctl/core/util/sizes';
import { type Flags, planQuery, virtHostFlags } from '../flags.ts';
import { type ActionContext, type ActionResult, agentDeps } from './action.ts';

/** --update (without --replace-self): a VM moved to a new generation, checked, rolled back if bad. */
export async function run(ctx: ActionContext): Promise<ActionResult> {
  const { flags, abs } = ctx;
  const outcome = await updateVirt(
    {
      ...planQuery(flags),
      vmName: flags.virtName,
      ...virtHostFlags(flags, abs),
      follow: flags.follow,
      force: flags.force,
      dryRun: flags.dryRun,
      ...timeouts(flags),
    },
    deps(ctx),
  );
  return { data: outcome.result, text: describeUpdate(outcome.result), failure: outcome.failure };
}

/** --rollback: back to the generation the last update replaced. */
export async function rollback(ctx: ActionContext): Promise<ActionResult> {
  const { flags } = ctx;
  const outcome = await rollbackVirt(
    {
      vmName: flags.virtName,
      system: flags.system,
      connect: flags.connect,
      logDir: ctx.abs(flags.logDir),
      ...timeouts(flags),
    },
    deps(ctx),
  );
  return { data: outcome.result, text: describeUpdate(outcome.result), failure: outcome.failure };
}

function deps(ctx: ActionContext) {
  const base = agentDeps(ctx);
  return {
    ...base,
    client: ctx.client,
    probe: systemProbe((file: string, args: string[]) => base.runner.run(file, args)),
  };
}

function timeouts(flags: Flags) {
  const duration = (flag: string, value: string) => {
    const ms = parseDuration(value, flag);
    if (ms < 1000) throw new ImgctlError('USAGE', `${flag} must be at least 1s`);
    return ms;
  };
  return {
    shutdownTimeoutMs: duration('--shutdown-timeout', flags.shutdownTimeout),
    healthTimeoutMs:
      flags.healthTimeout === undefined
        ? undefined
        : duration('--health-timeout', flags.healthTimeout),
  };
}

function label(g: GenerationSummary): string {
  const what = g.release
    ? g.reference === g.release
      ? g.release
      : `${g.release} (${g.reference})`
    : `${g.image} (working image)`;
  return `generation ${g.generation}: ${what}`;
}

function describeUpdate(r: UpdateResult): string {
  const head = {
    updated: r.dryRun
      ? `VM ${r.vm} would be updated (dry run: nothing was changed)`
      : `VM ${r.vm} updated`,
    'up-to-date': `VM ${r.vm} is up to date`,
    checked: `VM ${r.vm}: the interrupted update was checked`,
    'rolled-back': `VM ${r.vm} rolled back`,
  }[r.action];
  const lines = [head, `  from   ${label(r.from)}`, `  to     ${label(r.to)}`];
  if (r.failedHealth)
    lines.push(`  failed ${r.failedHealth.check}: ${r.failedHealth.reason ?? ''}`);
  if (r.health)
    lines.push(
      `  health ${r.health.check}: ${r.health.ok ? `ok after ${r.health.seconds.toFixed(1)}s` : `FAILED: ${r.health.reason ?? ''}`}`,
    );
  for (const d of r.disks)
    lines.push(
      `  disk ${d.id.padEnd(7)} ${d.path} (${d.format} ${formatSize(d.size)}${r.keptDataDisks.includes(d.path) ? ', kept' : d.use === 'system' ? ', new overlay' : ', new'})`,
    );
  if (r.failedSerialLog) lines.push(`  failed boot's serial console: ${r.failedSerialLog}`);
  lines.push(`  serial log   ${r.serialLog}`);
  if (r.xml) lines.push('', r.xml.trimEnd());
  else if (!r.dryRun && r.action !== 'up-to-date') lines.push(`  took   ${r.seconds.toFixed(1)}s`);
  return lines.join('\n');
}
