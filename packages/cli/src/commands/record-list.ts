import { listRecords } from '@imgctl/core/store/records';
import type { Handler } from '../command.ts';
import { renderTable } from '@imgctl/core/util/output';

export const run: Handler = async ([image], _options, ctx) => {
  const records = await listRecords(await ctx.storeDir(), image!);
  const text = renderTable(
    ['record', 'vcpus', 'memory', 'description'],
    records.map((r) => [
      r.name,
      String(r.vcpus ?? '-'),
      String(r.memory ?? '-'),
      r.description ?? '',
    ]),
  );
  return { data: records, text: text || `image '${image}' has no records` };
};
