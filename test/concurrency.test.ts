import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { BASE_TREE } from './helpers/base-store.ts';
import { execImgctl, listTree, makeStore, runCli } from './helpers/index.ts';

describe('concurrency: the store lock serializes writers', () => {
  it('20 `imgctl record add` processes started together give 20 valid records, none lost', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const n = 20;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        execImgctl(['record', 'add', 'web', `r${i + 1}`, '--vcpus', String(i + 1), '--json'], {
          cwd: dir,
        }),
      ),
    );
    for (const r of results) expect(r.exitCode, r.stderr).toBe(0);

    const records = (await listTree(join(dir, 'images/web/records'))).filter((f) =>
      /^r\d+\.yaml$/.test(f),
    );
    expect(records).toHaveLength(n);
    for (let i = 1; i <= n; i++) {
      const doc = parse(await readFile(join(dir, `images/web/records/r${i}.yaml`), 'utf8'));
      expect(doc).toMatchObject({
        kind: 'ImageRecord',
        name: `r${i}`,
        image: 'web',
        provision: { vcpus: i },
      });
    }
    // no temp files or stale lock left behind
    expect((await listTree(dir)).filter((f) => /\.tmp-|(^|\/)\.state\/lock$/.test(f))).toEqual([]);

    const validate = await runCli(['image', 'validate', '--store', dir]);
    expect(validate.stderr).toBe('');
    expect(validate.exitCode).toBe(0);
    const list = await runCli(['record', 'list', 'web', '--json', '--store', dir]);
    expect(list.exitCode).toBe(0);
    expect(JSON.parse(list.stdout)).toHaveLength(n + 2);
  });

  it('10 concurrent `imgctl image set` of different labels on one descriptor keep all 10', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const n = 10;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        execImgctl(['image', 'set', 'web', `labels.key${i}=value${i}`], {
          env: { IMGCTL_STORE: dir },
        }),
      ),
    );
    for (const r of results) expect(r.exitCode, r.stderr).toBe(0);

    const text = await readFile(join(dir, 'images/web/image.yaml'), 'utf8');
    const doc = parse(text);
    for (let i = 0; i < n; i++) expect(doc.labels[`key${i}`]).toBe(`value${i}`);
    expect(doc.labels.tier).toBe('frontend');
    expect(Object.keys(doc.labels)).toHaveLength(n + 1);
    const validate = await runCli(['image', 'validate', 'web', '--store', dir]);
    expect(validate.exitCode, validate.stderr).toBe(0);
  });
});
