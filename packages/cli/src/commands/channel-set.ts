import { setChannel } from '@imgctl/core/store/releases';
import { ImgctlError } from '@imgctl/core/util/errors';
import { printable } from '@imgctl/core/util/names';
import type { Handler } from '../command.ts';

export const run: Handler = async ([image, channel, revision], _options, ctx) => {
  if (!/^[1-9][0-9]{0,8}$/.test(revision!))
    throw new ImgctlError('USAGE', `invalid release revision '${printable(revision!)}'`, {
      hint: `a revision is a number, e.g. imgctl channel set ${image} ${channel} 3; 'imgctl image history ${image}' lists the releases`,
    });
  const result = await setChannel(await ctx.storeDir(), image!, channel!, Number(revision));
  const was =
    result.previous === undefined
      ? 'new'
      : result.previous === result.revision
        ? 'unchanged'
        : `was ${result.previous}`;
  return {
    data: result,
    text: `${result.image}: ${result.channel} → ${result.revision} (${was})`,
  };
};
