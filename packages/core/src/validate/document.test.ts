import { describe, expect, it } from 'vitest';
import { check, edit, IMAGE, RECORD, SYSTEM } from '../../../../test/helpers/validate-documents.ts';

describe('validateDocument', () => {
  it('accepts the valid documents', () => {
    expect(check('Image', IMAGE, { expectedName: 'web' })).toEqual([]);
    expect(check('ImageRecord', RECORD, { expectedName: 'large', expectedImage: 'web' })).toEqual(
      [],
    );
    expect(check('System', SYSTEM, { expectedName: 'web1' })).toEqual([]);
    expect(check('ImageStore', 'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\n')).toEqual([]);
  });

  it('reports YAML syntax errors alone, with their position', () => {
    const problems = check('Image', 'apiVersion: imgctl/v1\nkind: [Image\n');
    expect(problems.length).toBeGreaterThan(0);
    expect(problems[0]).toMatch(/^f\.yaml:\d+:\d+ \(document\): /);
    expect(check('Image', 'a: 1\na: 2\n')[0]).toMatch(/^f\.yaml:2:1 .*unique/i);
  });

  it('points at where an unclosed quote or list was opened, not where the file ends', () => {
    expect(
      check('Image', 'apiVersion: imgctl/v1\nkind: Image\nlabel: "Web\nrevision: 3\nboot: []\n')[0],
    ).toMatch(/^f\.yaml:3:8 /);
    expect(
      check(
        'Image',
        'apiVersion: imgctl/v1\nprovision:\n  custom_scripts: [a, b\nkind: Image\n',
      )[0],
    ).toMatch(/^f\.yaml:3:19 /);
  });

  it('reports an empty document', () => {
    expect(check('System', '')).toEqual([
      'f.yaml:1:1 (document): the document is empty (expected kind: System)',
    ]);
  });

  it('reports every problem of a file at once, in line order', () => {
    const text = edit(
      edit(edit(IMAGE, '  vcpus: 1', '  vcpus: 0'), 'format: qcow2', 'format: iso'),
      'arch: x86_64',
      'arch: amd64',
    );
    const problems = check('Image', text);
    expect(problems).toHaveLength(3);
    expect(problems.map((p) => p.split(' ')[0])).toEqual([
      'f.yaml:7:11',
      'f.yaml:15:10',
      'f.yaml:20:13',
    ]);
  });

  it('checks the name against the file and a record against its directory', () => {
    expect(check('Image', IMAGE, { expectedName: 'api' })).toEqual([
      "f.yaml:3:7 name: name 'web' does not match its directory images/api",
    ]);
    expect(check('System', SYSTEM, { expectedName: 'web2' })).toEqual([
      "f.yaml:3:7 name: name 'web1' does not match its file name web2.yaml",
    ]);
    expect(check('ImageRecord', RECORD, { expectedName: 'large', expectedImage: 'db' })).toEqual([
      "f.yaml:4:8 image: record belongs to image 'web' but is stored under images/db",
    ]);
  });
});
