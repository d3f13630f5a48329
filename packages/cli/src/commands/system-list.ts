import { listSystems } from '@imgctl/core/store/systems';
import type { Handler } from '../command.ts';
import { renderTable } from '@imgctl/core/util/output';

export const run: Handler = async (_args, _options, ctx) => {
  const systems = await listSystems(await ctx.storeDir());
  const text = renderTable(
    ['system', 'hostname', 'image', 'record', 'mac'],
    systems.map((s) => [
      s.name,
      s.hostname ?? '?',
      s.image ?? '?',
      s.record ?? 'default',
      s.macs.join(',') || '-',
    ]),
  );
  return {
    data: systems,
    text: text || 'no systems yet; add one with: imgctl system add NAME --image IMAGE',
  };
};
