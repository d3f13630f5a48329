import { formatProblem } from '@imgctl/core/yaml/document';
import { ImgctlError } from '@imgctl/core/util/errors';
import { validateStore } from '@imgctl/core/validate/store';
import type { Handler } from '../command.ts';

export const run: Handler = async ([name], _options, ctx) => {
  const storeDir = await ctx.storeDir();
  const result = await validateStore(storeDir, name === undefined ? {} : { images: [name] });
  const { images, records, systems } = result.counts;
  const scope = `${images} image(s), ${records} record(s), ${systems} system(s)`;
  if (result.problems.length > 0) {
    throw new ImgctlError('VALIDATION', `${result.problems.length} problem(s) in ${scope}`, {
      details: result.problems.map(formatProblem),
      hint: 'fix the files named above; every problem is listed',
    });
  }
  return { data: { valid: true, ...result.counts, problems: [] }, text: `ok: ${scope} valid` };
};
