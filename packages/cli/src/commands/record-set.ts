import { setRecord } from '@imgctl/core/store/records';
import type { Handler } from '../command.ts';
import { renderEdit } from './render-edit.ts';

export const run: Handler = async ([image, record, ...assignments], _options, ctx) =>
  renderEdit(await setRecord(await ctx.storeDir(), image!, record!, assignments));
