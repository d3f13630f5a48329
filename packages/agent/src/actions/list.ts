import { ImgctlError } from '@imgctl/core/util/errors';
import { renderTable } from '@imgctl/core/util/output';
import type { ActionContext, ActionResult } from './action.ts';

/** --list images|systems: what the server has. */
export async function run({ flags, client }: ActionContext): Promise<ActionResult> {
  if (flags.list === 'images') {
    const images = await client.listImages();
    const text = renderTable(
      ['image', 'revision', 'records', 'label'],
      images.map((i) => [i.name, String(i.revision ?? '-'), i.records.join(','), i.label ?? '']),
    );
    return { data: images, text: text || 'no images' };
  }
  if (flags.list === 'systems') {
    const systems = await client.listSystems();
    const text = renderTable(
      ['system', 'hostname', 'image', 'record', 'macs'],
      systems.map((s) => [
        s.name,
        s.hostname ?? '-',
        s.image ?? '-',
        s.record ?? '-',
        s.macs.join(','),
      ]),
    );
    return { data: systems, text: text || 'no systems' };
  }
  throw new ImgctlError('USAGE', `--list takes images or systems, not '${flags.list}'`);
}
