import { describe, expect, it } from 'vitest';
import { readDomainXml } from './capture.ts';
import { convertVirtImage } from './virt-image.ts';
import { parseXml } from './xml.ts';

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return `${(error as { code: string }).code}: ${(error as Error).message}`;
  }
  return 'no error';
};

describe('parseXml', () => {
  it('reads elements, attributes, text, CDATA and character references', () => {
    const root = parseXml(
      `<?xml version="1.0"?>\n<!-- c --><a x='1' y="&lt;2&gt;"><b>t&amp;u &#65;&#x42;</b><![CDATA[<raw>]]><c/></a>`,
      'f.xml',
    );
    expect(root).toMatchObject({ name: 'a', attrs: { x: '1', y: '<2>' }, text: '<raw>' });
    expect(root.children.map((c) => [c.name, c.text])).toEqual([
      ['b', 't&u AB'],
      ['c', ''],
    ]);
  });

  it.each([
    ['<!DOCTYPE a [<!ENTITY x "y">]><a/>', 'DOCTYPE'],
    ['<a>&x;</a>', 'unknown entity'],
    ['<a><b></a>', '</a> closes <b>'],
    ['<a x="1" x="2"/>', 'given twice'],
    ['<a/><b/>', 'content after the root'],
    ['<a x=1/>', 'must be quoted'],
    ['<a>fish & chips</a>', "bare '&'"],
    [`${'<a>'.repeat(100)}`, 'nested too deeply'],
  ])('refuses %s', (xml, message) => {
    expect(code(() => parseXml(xml, 'f.xml'))).toMatch(
      new RegExp(`^VALIDATION: f.xml:1: .*${message.replace(/[[\]()<>/]/g, '\\$&')}`),
    );
  });
});

describe('convertVirtImage', () => {
  const xml = (domain: string, storage = '<disk file="a.img"/>') =>
    parseXml(
      `<image><name>app</name><domain>${domain}</domain><storage>${storage}</storage></image>`,
      'x',
    );

  it('defaults: hvm boots from hd, 512MiB and one vcpu when devices are missing (and says so)', () => {
    const result = convertVirtImage(
      xml(
        '<boot type="hvm"><guest><arch>i386</arch></guest><drive disk="a.img" target="hda"/></boot>',
      ),
    );
    expect(result.doc.boot).toEqual([
      { type: 'hvm', arch: 'i686', loader: 'hd', drives: [{ disk: 'a.img', target: 'hda' }] },
    ]);
    expect(result.doc.devices).toMatchObject({ vcpus: 1, memory: '512MiB', graphics: 'none' });
    expect(result.notReplicated).toContain(
      'domain/devices is not given; 1 vcpu and 512MiB are used',
    );
    expect(result.disks[0]).toMatchObject({ id: 'a.img', use: 'system', format: 'raw' });
  });

  it('refuses kernel paths leaving the directory, unknown drives, and a use it does not know', () => {
    expect(
      code(() =>
        convertVirtImage(
          xml(
            '<boot type="hvm"><guest><arch>x86_64</arch></guest><os><kernel>../../vmlinuz</kernel></os></boot>',
          ),
        ),
      ),
    ).toMatch(/^VALIDATION: .*not a path inside/);
    expect(
      code(() =>
        convertVirtImage(
          xml(
            '<boot type="hvm"><guest><arch>x86_64</arch></guest><drive disk="b" target="hda"/></boot>',
          ),
        ),
      ),
    ).toMatch(/unknown disk 'b'/);
    expect(
      code(() =>
        convertVirtImage(
          xml(
            '<boot type="hvm"><guest><arch>x86_64</arch></guest><drive disk="a.img" target="hda"/></boot>',
            '<disk file="a.img" use="swap"/>',
          ),
        ),
      ),
    ).toMatch(/unknown use 'swap'/);
  });

  it('makes disk ids names and keeps drives pointing at them', () => {
    const result = convertVirtImage(
      xml(
        '<boot type="hvm"><guest><arch>x86_64</arch></guest><drive disk="Disk One.IMG" target="vda"/></boot>',
        '<disk file="Disk One.IMG"/>',
      ),
    );
    expect(result.disks[0]!.id).toBe('disk-one.img');
    expect(result.doc.boot[0]!.drives).toEqual([{ disk: 'disk-one.img', target: 'vda' }]);
    expect(
      result.notReplicated.some((n) => n.includes("'Disk One.IMG' is named 'disk-one.img'")),
    ).toBe(true);
  });
});

describe('readDomainXml', () => {
  it('reads memory in any unit, disks, nics and direct kernel boot; reports the rest', () => {
    const shape =
      readDomainXml(`<domain type='kvm'><name>x</name><memory unit='GiB'>2</memory><vcpu>3</vcpu>
      <os><type arch='aarch64'>hvm</type><kernel>/boot/vmlinuz</kernel><cmdline>console=ttyAMA0</cmdline><boot dev='network'/></os>
      <devices><disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vda'/></disk>
      <disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vdb'/><driver type='qcow2'/></disk>
      <interface type='user'><model type='rtl8139'/></interface><graphics type='sdl'/></devices></domain>`);
    expect(shape).toMatchObject({
      vcpus: 3,
      memory: '2GiB',
      arch: 'aarch64',
      kernel: '/boot/vmlinuz',
      cmdline: 'console=ttyAMA0',
      disks: [{ file: '/img/a.qcow2', target: 'vdb', format: 'qcow2', use: 'system' }],
      nics: [{ model: 'rtl8139' }],
      graphics: 'none',
    });
    expect(shape.notReplicated).toEqual([
      "boot device 'network' (imgctl boots from hd or cdrom)",
      "disk vda of type 'block' is not a file and is not captured",
      "interface of type 'user' is captured as one on the default network",
      "graphics of type 'sdl' is not supported; none is used",
    ]);
  });
});
