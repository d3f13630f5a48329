import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { editYamlText, stringifyYaml, type YamlEdit } from './yaml-edit.ts';

/** A descriptor as a person writes it: comments, quoting of their choice, a block scalar, `{}`. */
const IMAGE = `# The web appliance
apiVersion: imgctl/v1
kind: Image
name: 'web'   # single-quoted, comment aligned by hand
label: "Web appliance"
devices:
  vcpus: 1 # one is enough
  memory: 512MiB
disks:
  # the system disk
  - id: root
    size: 2GiB
parameters:
  motd:
    default: |
      Welcome
      to web
  port:
    default: 80
provision: {}
`;

function edit(...edits: YamlEdit[]): string {
  return editYamlText(IMAGE, edits);
}

/** The lines of `after` that differ from `before`, by line number (1-based); both must have as many lines. */
function changedLines(before: string, after: string): Record<number, string> {
  const a = before.split('\n');
  const b = after.split('\n');
  expect(b).toHaveLength(a.length);
  return Object.fromEntries(b.flatMap((line, i) => (line === a[i] ? [] : [[i + 1, line]])));
}

/** `after` is `before` with `lines` inserted after line `at` (1-based), nothing else changed. */
function expectInserted(before: string, after: string, at: number, lines: string[]): void {
  const a = before.split('\n');
  expect(after.split('\n')).toEqual([...a.slice(0, at), ...lines, ...a.slice(at)]);
}

describe('editYamlText: a value that exists', () => {
  it('replaces a top-level scalar on its own line and changes nothing else', () => {
    expect(changedLines(IMAGE, edit({ path: ['label'], value: 'Web server' }))).toEqual({
      5: 'label: "Web server"',
    });
  });

  it('keeps the quoting style and the comment after the value', () => {
    expect(changedLines(IMAGE, edit({ path: ['name'], value: 'api' }))).toEqual({
      4: "name: 'api'   # single-quoted, comment aligned by hand",
    });
  });

  it('replaces a nested scalar, keeping its comment', () => {
    expect(changedLines(IMAGE, edit({ path: ['devices', 'vcpus'], value: 4 }))).toEqual({
      7: '  vcpus: 4 # one is enough',
    });
  });

  it('reaches into a list by index', () => {
    expect(changedLines(IMAGE, edit({ path: ['disks', 0, 'size'], value: '8GiB' }))).toEqual({
      12: '    size: 8GiB',
    });
  });

  it('writes null as null', () => {
    expect(changedLines(IMAGE, edit({ path: ['label'], value: null }))).toEqual({
      5: 'label: null',
    });
  });

  it('replaces a block scalar with a one-line value, and the next key stays on its own line', () => {
    const after = edit({ path: ['parameters', 'motd', 'default'], value: 'hello' });
    expect(after).toBe(
      IMAGE.replace('    default: |\n      Welcome\n      to web\n', '    default: hello\n'),
    );
    expect(parse(after).parameters).toEqual({
      motd: { default: 'hello' },
      port: { default: 80 },
    });
  });

  it('writes a multi-line string as a block, keeping comments elsewhere', () => {
    const after = edit({ path: ['label'], value: 'line one\nline two\n' });
    expect(parse(after).label).toBe('line one\nline two\n');
    expect(after).toContain('# The web appliance\n');
    expect(after).toContain('  # the system disk\n');
    expect(after).toContain('  vcpus: 1 # one is enough\n');
  });

  it('replaces a scalar with a list, keeping the key where it was', () => {
    const after = edit({ path: ['devices', 'memory'], value: ['a', 'b'] });
    expect(parse(after).devices).toEqual({ vcpus: 1, memory: ['a', 'b'] });
    expect(Object.keys(parse(after))).toEqual(Object.keys(parse(IMAGE)));
    expect(after).toContain('  vcpus: 1 # one is enough\n');
  });
});

describe('editYamlText: a key that is new', () => {
  it('goes after the last key of its mapping, at its indentation, no other line changed', () => {
    expectInserted(IMAGE, edit({ path: ['devices', 'graphics'], value: 'vnc' }), 8, [
      '  graphics: vnc',
    ]);
  });

  it('goes after the sibling named by `after`', () => {
    expectInserted(
      IMAGE,
      edit({ path: ['devices', 'graphics'], value: 'vnc', after: 'vcpus' }),
      7,
      ['  graphics: vnc'],
    );
  });

  it('goes at the end of a list item mapping', () => {
    expectInserted(IMAGE, edit({ path: ['disks', 0, 'sha256'], value: 'abc' }), 12, [
      '    sha256: abc',
    ]);
  });

  it('brings the mappings missing on its path, as blocks', () => {
    expectInserted(IMAGE, edit({ path: ['os', 'family'], value: 'linux' }), 20, [
      'os:',
      '  family: linux',
    ]);
  });

  it('with a list or mapping value is written as a block', () => {
    expectInserted(IMAGE, edit({ path: ['devices', 'nics'], value: [{ model: 'virtio' }] }), 8, [
      '  nics:',
      '    - model: virtio',
    ]);
  });

  it('opens an empty flow mapping `{}` into a block', () => {
    const after = edit({ path: ['provision', 'script'], value: 'provision.sh' });
    expect(after.endsWith('provision:\n  script: provision.sh\n')).toBe(true);
    expect(parse(after).provision).toEqual({ script: 'provision.sh' });
    expect(after).toContain('  vcpus: 1 # one is enough\n');
  });

  it('adds a list item', () => {
    const after = edit({ path: ['disks', 1], value: { id: 'data', size: '1GiB' } });
    expect(parse(after).disks).toEqual([
      { id: 'root', size: '2GiB' },
      { id: 'data', size: '1GiB' },
    ]);
    expect(after).toContain('  # the system disk\n');
  });

  it('ends the text with a line break when the text had none', () => {
    expect(editYamlText('a: 1\nb: 2', [{ path: ['c'], value: 3 }])).toBe('a: 1\nb: 2\nc: 3\n');
  });
});

describe('editYamlText: removal', () => {
  it('removes the key and its value, keeping the other keys in order and their comments', () => {
    const after = edit({ path: ['devices', 'vcpus'], value: undefined });
    expect(parse(after).devices).toEqual({ memory: '512MiB' });
    expect(Object.keys(parse(after))).toEqual(Object.keys(parse(IMAGE)));
    expect(after).toContain('# The web appliance\n');
    expect(after).toContain('  # the system disk\n');
    expect(after).not.toContain('one is enough');
  });

  it('removes a whole nested mapping', () => {
    const after = edit({ path: ['parameters', 'motd'], value: undefined });
    expect(parse(after).parameters).toEqual({ port: { default: 80 } });
  });
});

describe('editYamlText: several edits', () => {
  it('applies them in order, a later edit of the same path winning', () => {
    const after = edit(
      { path: ['label'], value: 'first' },
      { path: ['devices', 'graphics'], value: 'vnc' },
      { path: ['label'], value: 'second' },
    );
    expect(parse(after)).toMatchObject({ label: 'second', devices: { graphics: 'vnc' } });
  });

  it('leaves the text as it was when there are none', () => {
    expect(editYamlText(IMAGE, [])).toBe(IMAGE);
  });
});

describe('stringifyYaml', () => {
  it("keeps the value's key order, indents by two and never folds a long line", () => {
    const long = 'x'.repeat(120);
    expect(stringifyYaml({ b: 1, a: { list: [1, 2] }, long })).toBe(
      `b: 1\na:\n  list:\n    - 1\n    - 2\nlong: ${long}\n`,
    );
  });
});
