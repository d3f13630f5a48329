import { provisioningStatus, releaseStatus, type SystemStatus } from '@imgctl/core/server/events';
import { parseDuration } from '@imgctl/core/util/duration';
import { assertName, terminalSafe } from '@imgctl/core/util/names';
import type { Handler } from '../command.ts';
import { renderTable } from '@imgctl/core/util/output';

export interface StatusOptions {
  system?: string;
  /** a duration such as 90s, 10m, 2h; the spec's default is 10m */
  stalledAfter?: string;
  outdated?: boolean;
}

/** Reads .state/events of the store directly: no server needed. */
export const run: Handler<StatusOptions> = async (_args, options, ctx) => {
  const storeDir = await ctx.storeDir();
  const system = options.system === undefined ? undefined : assertName('system', options.system);
  const stalledAfterMs = parseDuration(options.stalledAfter ?? '10m', '--stalled-after');
  const now = new Date();
  const statuses = await provisioningStatus(storeDir, { system, now, stalledAfterMs });
  if (options.outdated) {
    const outdated = (await releaseStatus(storeDir, statuses)).filter((r) => r.outdated);
    const table = renderTable(
      ['system', 'follows', 'deployed', 'current'],
      outdated.map((r) => [
        r.system,
        r.follows,
        r.deployed ?? '-',
        r.current ?? `? (${terminalSafe(r.error ?? '')})`,
      ]),
    );
    return { data: outdated, text: table || 'every system runs the release it follows' };
  }
  const text =
    system !== undefined
      ? details(statuses[0]!)
      : renderTable(
          ['system', 'state', 'phase', 'image', 'started', 'elapsed', 'last event'],
          statuses.map((s) => [
            s.system,
            s.state,
            s.phase ?? '-',
            s.release ?? s.image ?? '-',
            s.started_at ?? '-',
            s.elapsed_ms === null ? '-' : formatMs(s.elapsed_ms),
            s.updated_at === null
              ? '-'
              : `${formatMs(now.getTime() - Date.parse(s.updated_at))} ago`,
          ]),
        ) || 'no systems and no events yet';
  return { data: statuses, text };
};

function details(s: SystemStatus): string {
  const lines = [
    `system:  ${s.system}`,
    `state:   ${s.state}${s.phase ? ` (last phase: ${s.phase})` : ''}`,
  ];
  if (s.image) lines.push(`image:   ${s.release ?? s.image}${s.vm_name ? ` as ${s.vm_name}` : ''}`);
  if (s.deployed)
    lines.push(
      `runs:    ${s.deployed.release ?? `${s.deployed.image} (working image)`} since ${s.deployed.at}`,
    );
  if (s.started_at)
    lines.push(
      `started: ${s.started_at}   elapsed ${formatMs(s.elapsed_ms ?? 0)}   runs ${s.runs}`,
    );
  if (s.error) lines.push(`error:   [${s.error.code}] ${terminalSafe(s.error.message)}`);
  if (s.phases.length > 0) {
    lines.push('');
    lines.push(
      renderTable(
        ['phase', 'at', 'after start', 'took'],
        s.phases.map((p) => [p.phase, p.time, `+${formatMs(p.after_ms)}`, formatMs(p.took_ms)]),
      ),
    );
  }
  return lines.join('\n');
}

/** 850ms, 12.3s, 4m05s, 2h10m */
function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
