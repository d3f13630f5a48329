import { listReleases, readChannels } from '@imgctl/core/store/releases';
import type { Handler } from '../command.ts';
import { renderTable } from '@imgctl/core/util/output';

export const run: Handler = async ([image], _options, ctx) => {
  const storeDir = await ctx.storeDir();
  const releases = await listReleases(storeDir, image!);
  const channels = await readChannels(storeDir, image!);
  const rows = Object.keys(channels)
    .sort()
    .map((channel) => {
      const revision = channels[channel]!;
      // a hand-edited channels.yaml may name a release that is not there
      const state = releases.find((r) => r.revision === revision)?.state ?? 'missing';
      return { channel, revision, state };
    });
  const text =
    rows.length === 0
      ? `image '${image}' has no channels; point one at a release with: imgctl channel set ${image} stable REVISION`
      : renderTable(
          ['channel', 'revision', 'state'],
          rows.map((r) => [r.channel, String(r.revision), r.state]),
        );
  return { data: rows, text };
};
