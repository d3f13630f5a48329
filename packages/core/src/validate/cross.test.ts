import { describe, expect, it } from 'vitest';
import { formatProblem, parseYaml } from '../yaml/document.ts';
import { checkOverlay } from './cross.ts';
import {
  edit,
  GOOD_STORE,
  makeStore,
  RECORD,
  SYSTEM,
} from '../../../../test/helpers/validate-documents.ts';

describe('checkOverlay', () => {
  it('checks a new record or system against the store', async () => {
    const dir = await makeStore(GOOD_STORE);
    const record = edit(
      edit(RECORD, 'name: large', 'name: big'),
      '    port: 8080',
      '    edition: x',
    );
    expect(
      (
        await checkOverlay(dir, 'ImageRecord', parseYaml('r.yaml', record), {
          expectedName: 'big',
          expectedImage: 'web',
        })
      ).map(formatProblem),
    ).toEqual([
      "r.yaml:12:5 provision.parameters.edition: parameter 'edition' is not customizable (set by record 'big')",
    ]);
    const system = edit(SYSTEM, 'name: web1', 'name: web2');
    expect(
      (
        await checkOverlay(dir, 'System', parseYaml('s.yaml', system), { expectedName: 'web2' })
      ).map(formatProblem),
    ).toEqual([
      "s.yaml:4:11 hostname: hostname 'web1.example.com' is also used by system 'web1'",
      "s.yaml:9:10 interfaces[0].mac: MAC 52:54:00:12:34:56 is also used by system 'web1'",
    ]);
    // a system compared with its own earlier version is not a duplicate of itself
    expect(
      await checkOverlay(dir, 'System', parseYaml('s.yaml', SYSTEM), { expectedName: 'web1' }),
    ).toEqual([]);
    // a system that follows a channel or release is checked against the working image
    const follows = edit(SYSTEM, 'image: web', 'image: web@stable');
    expect(follows).toContain('image: web@stable');
    expect(
      await checkOverlay(dir, 'System', parseYaml('s.yaml', follows), { expectedName: 'web1' }),
    ).toEqual([]);
  });
});
