import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import { loadDocument } from './load.ts';
import { GOOD_STORE, makeStore } from '../../../../test/helpers/validate-documents.ts';

describe('loadDocument', () => {
  it('returns the value, or throws VALIDATION with every problem, or NOT_FOUND', async () => {
    const dir = await makeStore(GOOD_STORE);
    const { value } = await loadDocument<{ name: string }>(
      'Image',
      join(dir, 'images/web/image.yaml'),
      'images/web/image.yaml',
      { expectedName: 'web' },
    );
    expect(value.name).toBe('web');

    await writeFile(
      join(dir, 'bad.yaml'),
      'apiVersion: imgctl/v1\nkind: System\nname: b\nimage: web\nhostname: -x\n',
    );
    const error = await loadDocument('System', join(dir, 'bad.yaml'), 'systems/bad.yaml').catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ImgctlError);
    expect(error).toMatchObject({
      code: 'VALIDATION',
      message: 'systems/bad.yaml is not valid (1 problem)',
    });
    expect((error as ImgctlError).details).toEqual([
      'systems/bad.yaml:5:11 hostname: must be a host name like web1 or web1.example.com',
    ]);

    await expect(
      loadDocument('System', join(dir, 'none.yaml'), 'systems/none.yaml'),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
