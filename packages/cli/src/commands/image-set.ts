import { setImage } from '@imgctl/core/store/images';
import type { Handler } from '../command.ts';
import { renderEdit } from './render-edit.ts';

export const run: Handler = async ([name, ...assignments], _options, ctx) =>
  renderEdit(await setImage(await ctx.storeDir(), name!, assignments));
