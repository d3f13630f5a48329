import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseYaml } from './document.ts';
import { quickParse } from './quick-yaml.ts';

/** Every document of the example store: what imgctl and people write. */
const EXAMPLE_STORE = fileURLToPath(new URL('../../../../image-store', import.meta.url));
const EXAMPLE_DOCUMENTS = readdirSync(EXAMPLE_STORE, { recursive: true, encoding: 'utf8' })
  .filter((path) => path.endsWith('.yaml'))
  .map((path) => readFileSync(join(EXAMPLE_STORE, path), 'utf8'));

describe('quickParse', () => {
  const full = (text: string) => {
    const y = parseYaml('q.yaml', text);
    return y.problems.length > 0 ? 'invalid' : y.value;
  };

  it('reads exactly what the YAML parser reads, or declines', () => {
    const scalars = [
      'yes',
      'no',
      'on',
      '0o17',
      '0x1f',
      '1e3',
      '.5',
      '1.',
      '-',
      '1_000',
      '12:30',
      '~',
      'Null',
      'TRUE',
      '+1',
      '-0',
      '007',
      '1.0e+3',
      '.inf',
      '-.Inf',
      '.NaN',
      'a: b',
      'a #b',
      'a#b',
      '@x',
      '`x',
      '%x',
      '!x',
      '&x',
      '*x',
      '|x',
      '>x',
      '?x',
      'x:',
      '[a]',
      '{a: 1}',
      '[a, "b"]',
      '[]',
      '{}',
      '[1, 2.5, true, null, x]',
      '{a: 1, b: [x]}',
      '"a\\nb"',
      "'it''s'",
      '"quoted # not a comment"',
      "'single'",
      'http://x/{{ a }}',
      '$HOME',
      '(x)',
      '9999999999999999999',
      'a, b',
      '2024-01-01T00:00:00Z',
      'x # comment',
      '"x" # comment',
      '-x',
      'ssh-ed25519 AAAA user@host',
    ];
    const docs = [
      ...EXAMPLE_DOCUMENTS,
      ...scalars.map((s) => `k: ${s}\n`),
      ...scalars.map((s) => `k:\n  - ${s}\n`),
      'a:\n- 1\n- 2\nb: x\n',
      'a:\n  b:\n    c: 1\n  d: 2\n',
      'a: 1\na: 2\n',
      'a: |\n  one\n\n  # not a comment\n  two\n\nb: 1\n',
      'a: |-\n  one\n    two\nb: 1\n',
      'a: >\n  folded\n  text\n',
      'a: x\n  continued\n',
      'a:\r\n  b: 1\r\n',
      'null: 1\ntrue: 2\n1: 3\n',
      '- 1\n- 2\n',
      '--- \na: 1\n',
      'a: [1,\n  2]\n',
      'a:\n  - b: 1\n    c: 2\n  -   d: 3\n  -\n    e: 4\n',
      'a: "x\n  y"\n',
      '\tb: 1\n',
    ];
    let quick = 0;
    const differ: unknown[] = [];
    for (const text of docs) {
      const value = quickParse(text);
      if (value === undefined) continue;
      quick++;
      const expected = full(text);
      if (!isDeepStrictEqual(value, expected)) differ.push({ text, value, expected });
    }
    expect(differ).toEqual([]);
    expect(quick).toBeGreaterThan(docs.length / 2);
  });
});
