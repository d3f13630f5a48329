import { loadImage } from '@imgctl/core/store/images';
import { listReleases, type ReleaseInfo } from '@imgctl/core/store/releases';
import { exists, storePaths } from '@imgctl/core/store/store';
import { terminalSafe } from '@imgctl/core/util/names';
import type { Handler } from '../command.ts';
import { renderTable } from '@imgctl/core/util/output';

export const run: Handler = async ([image], _options, ctx) => {
  const storeDir = await ctx.storeDir();
  const releases = await listReleases(storeDir, image!);
  // the releases of a removed image are still history: there is just no working revision
  const revision = (await exists(storePaths.imageFile(storeDir, image!)))
    ? (await loadImage(storeDir, image!)).revision
    : undefined;
  const working =
    revision === undefined
      ? null
      : { revision, released: releases.some((r) => r.revision === revision) };

  const lines: string[] = [];
  if (releases.length === 0)
    lines.push(`no releases of '${image}' yet; make one with: imgctl release create ${image}`);
  else
    lines.push(
      renderTable(
        ['revision', 'parent', 'channels', 'created', 'by', 'state'],
        releases.map((r) => [
          String(r.revision),
          r.parent ?? '-',
          r.channels.join(',') || '-',
          r.created_at.slice(0, 10),
          terminalSafe(r.created_by),
          describeState(r),
        ]),
      ),
    );
  if (working && !working.released)
    lines.push(`working revision ${working.revision} (not released)`);
  if (!working) lines.push(`image '${image}' is no longer in images/ (only its releases are)`);
  return { data: { image, releases, working }, text: lines.join('\n') };
};

/** active, or the withdrawal with its date and reason: `revoked 2026-12-05: CVE-2026-1`. */
function describeState(release: ReleaseInfo): string {
  const withdrawal = release.revoked ?? release.deprecated;
  if (!withdrawal) return release.state;
  const reason = withdrawal.reason ? `: ${terminalSafe(withdrawal.reason)}` : '';
  return `${release.state} ${withdrawal.at.slice(0, 10)}${reason}`;
}
