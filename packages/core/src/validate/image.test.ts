import { describe, expect, it } from 'vitest';
import { check, edit, IMAGE, RECORD, SHA } from '../../../../test/helpers/validate-documents.ts';

describe('validateDocument: images', () => {
  it('refuses a memory under 1MiB: a number alone is bytes, so the unit was forgotten', () => {
    expect(check('Image', edit(IMAGE, '  memory: 512MiB', '  memory: 512'))).toEqual([
      'f.yaml:16:11 devices.memory: memory 512 is less than 1MiB (a number alone is bytes): give a unit, e.g. 512MiB',
    ]);
    expect(check('ImageRecord', edit(RECORD, '  memory: 2GiB', '  memory: 0'))).toEqual([
      'f.yaml:7:11 provision.memory: memory 0 is less than 1MiB (a number alone is bytes): give a unit, e.g. 512MiB',
    ]);
  });

  it('reports sizes too large to count in bytes', () => {
    expect(check('Image', edit(IMAGE, '    size: 1GiB', '    size: 99999999999TiB'))).toEqual([
      'f.yaml:27:11 disks[1].size: size 99999999999TiB is too large',
    ]);
  });

  it('refuses a disk of size 0, in an image and in a record', () => {
    expect(check('Image', edit(IMAGE, '    size: 1GiB', '    size: 0'))).toEqual([
      'f.yaml:27:11 disks[1].size: a disk of size 0 holds nothing',
    ]);
    expect(check('ImageRecord', edit(RECORD, '      size: 10GiB', '      size: 0B'))).toEqual([
      'f.yaml:10:13 provision.disks.data.size: a disk of size 0 holds nothing',
    ]);
  });

  it('finds duplicate disk ids', () => {
    const text = edit(IMAGE, '  - id: data', '  - id: system');
    expect(check('Image', text)).toContain(
      "f.yaml:24:9 disks[1].id: duplicate disk id 'system' (also disks[0])",
    );
  });

  it('finds boot drives naming unknown disks and duplicate targets', () => {
    const text = edit(
      edit(IMAGE, '      - disk: data', '      - disk: date'),
      'target: vdb',
      'target: vda',
    );
    expect(check('Image', text)).toEqual([
      "f.yaml:12:15 boot[0].drives[1].disk: unknown disk 'date' (disks: system, data)",
      "f.yaml:13:17 boot[0].drives[1].target: duplicate target 'vda' (also boot[0].drives[0])",
    ]);
  });

  it('needs exactly one of loader and kernel', () => {
    expect(check('Image', edit(IMAGE, '    loader: hd\n', ''))).toEqual([
      "f.yaml:6:5 boot[0]: missing required key 'loader' or 'kernel' (how the guest boots)",
    ]);
    expect(
      check('Image', edit(IMAGE, '    loader: hd\n', '    loader: hd\n    kernel: vmlinuz\n')),
    ).toEqual(['f.yaml:6:5 boot[0]: set either loader or kernel, not both']);
    expect(
      check(
        'Image',
        edit(IMAGE, '    loader: hd\n', '    kernel: boot/vmlinuz\n    initrd: boot/initrd.img\n'),
      ),
    ).toEqual([]);
    expect(
      check('Image', edit(IMAGE, '    loader: hd\n', '    loader: hd\n    cmdline: quiet\n')),
    ).toEqual(['f.yaml:9:14 boot[0].cmdline: cmdline needs kernel']);
  });

  it('needs sha256 for content in the store or at a URL, and allows disks not built yet', () => {
    expect(check('Image', edit(IMAGE, `    sha256: ${SHA}\n`, ''))).toEqual([
      "f.yaml:18:5 disks[0]: missing required key 'sha256' (a disk with blob: true needs its checksum)",
    ]);
    expect(
      check(
        'Image',
        edit(
          IMAGE,
          `    sha256: ${SHA}\n    blob: true\n`,
          '    url: https://example.com/s.qcow2\n',
        ),
      ),
    ).toEqual([
      "f.yaml:18:5 disks[0]: missing required key 'sha256' (a disk with url needs its checksum)",
    ]);
    expect(check('Image', edit(IMAGE, `    sha256: ${SHA}\n    blob: true\n`, ''))).toEqual([]);
    expect(
      check(
        'Image',
        edit(IMAGE, '    use: data', `    use: scratch\n    blob: true\n    sha256: ${SHA}`),
      ),
    ).toEqual([
      'f.yaml:24:5 disks[1]: a scratch disk is created empty: it takes no sha256, blob or url',
    ]);
  });

  it('refuses a parameter with both default and computed, and defaults of the wrong type', () => {
    const text = edit(
      edit(IMAGE, '  url:\n', '  url:\n    default: x\n'),
      '    default: 80',
      '    default: eighty',
    );
    expect(check('Image', text)).toEqual([
      "f.yaml:30:14 parameters.port.default: must be an integer (parameter type integer; got 'eighty')",
      "f.yaml:35:3 parameters.url: parameter 'url' sets both default and computed; keep one",
    ]);
    expect(
      check(
        'Image',
        edit(IMAGE, '    customizable: false', '    customizable: false\n    secret: true'),
      ),
    ).toEqual([]);
  });
});
