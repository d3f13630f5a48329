import { setSystem } from '@imgctl/core/store/systems';
import type { Handler } from '../command.ts';
import { renderEdit } from './render-edit.ts';

export const run: Handler = async ([name, ...assignments], _options, ctx) =>
  renderEdit(await setSystem(await ctx.storeDir(), name!, assignments));
