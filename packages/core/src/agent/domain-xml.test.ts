import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  busOf,
  type DomainSpec,
  parseDomainXml,
  renderDomainXml,
  renderVmMeta,
  type VmMeta,
} from './domain-xml.ts';

const spec: DomainSpec = {
  name: 'web01',
  virtType: 'qemu',
  memoryBytes: 256 * 1024 * 1024,
  vcpus: 2,
  boot: {
    type: 'hvm',
    arch: 'x86_64',
    features: ['acpi', 'apic', 'pae'],
    loader: 'hd',
    drives: [],
  },
  disks: [
    {
      path: "/var/lib/libvirt/images/web01 'root'.qcow2",
      format: 'qcow2',
      target: 'vda',
      device: 'disk',
    },
    {
      path: '/var/lib/libvirt/images/web01-data.raw',
      format: 'raw',
      target: 'vdb',
      device: 'disk',
    },
    {
      path: '/var/lib/libvirt/images/web01-seed.iso',
      format: 'raw',
      target: 'hdc',
      device: 'cdrom',
    },
  ],
  nics: [
    { mac: '52:54:00:12:34:56', model: 'virtio', network: 'default' },
    { mac: '52:54:00:12:34:57', model: 'e1000', bridge: 'br0' },
  ],
  serialLog: '/var/log/imgctl/web/web01.serial.log',
  graphics: 'vnc',
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'domain-xml-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function validate(xml: string) {
  const file = join(dir, `${Math.random().toString(16).slice(2)}.xml`);
  await writeFile(file, xml);
  return execa('virt-xml-validate', [file, 'domain'], { reject: false });
}

describe('renderDomainXml', () => {
  it('passes virt-xml-validate with disks, a seed cdrom, network and bridge nics, serial log and vnc', async () => {
    const xml = renderDomainXml(spec);
    const result = await validate(xml);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(xml).toContain("<driver name='qemu' type='qcow2'/>");
    expect(xml).toContain("<target dev='hdc' bus='ide'/>");
    expect(xml).toContain("<source bridge='br0'/>");
    expect(xml).toContain("<memory unit='KiB'>262144</memory>");
  });

  it('escapes every value, so a hostile name or path cannot add elements', async () => {
    const xml = renderDomainXml({
      ...spec,
      name: 'x</name><devices/><name>y',
      description: 'a & b <c>',
    });
    expect(xml).not.toContain('<devices/>');
    expect(xml).toContain('&lt;/name&gt;');
    expect(xml).toContain('&apos;root&apos;');
    expect((await validate(xml)).exitCode).toBe(0);
  });

  it('boots a kernel directly when the entry names one', async () => {
    const xml = renderDomainXml({
      ...spec,
      boot: {
        type: 'hvm',
        arch: 'x86_64',
        kernel: 'boot/vmlinuz',
        initrd: 'boot/initrd',
        cmdline: 'console=ttyS0',
        drives: [],
      },
      kernelPath: '/var/cache/imgctl/vmlinuz',
      initrdPath: '/var/cache/imgctl/initrd',
      graphics: 'none',
    });
    expect(xml).toContain('<kernel>/var/cache/imgctl/vmlinuz</kernel>');
    expect(xml).toContain('<cmdline>console=ttyS0</cmdline>');
    expect(xml).not.toContain('<graphics');
    expect((await validate(xml)).exitCode).toBe(0);
  });

  it('derives the bus from the target name', () => {
    expect([busOf('vda'), busOf('hdc'), busOf('sdb'), busOf('xvda')]).toEqual([
      'virtio',
      'ide',
      'sata',
      'xen',
    ]);
    expect(() => busOf('fd0')).toThrow(/unknown disk target/);
  });
});

describe('the VM metadata imgagent keeps in a domain', () => {
  const meta: VmMeta = {
    generation: 3,
    previous: 2,
    image: 'web',
    reference: 'web@stable',
    release: 'web@7',
    record: 'default',
    system: 'web01',
    instance: 'web01-0a1b2c3d',
    fingerprint: 'f'.repeat(64),
    health: 'pending',
    healthSerial: `READY <"it's">`,
    healthTimeoutMs: 90_000,
    virtPath: '/var/lib/libvirt/images',
    seed: '/var/lib/libvirt/images/web01-seed.g3.iso',
    serialLog: '/var/lib/libvirt/images/web01.serial.log',
    disks: [
      {
        id: 'root',
        use: 'system',
        path: '/var/lib/libvirt/images/web01-root.g3.qcow2',
        format: 'qcow2',
        sha256: 'a'.repeat(64),
      },
      { id: 'data', use: 'data', path: '/var/lib/libvirt/images/web01-data.raw', format: 'raw' },
    ],
  };

  it('reads back what it wrote, with the UUID and the MAC addresses', () => {
    const xml = renderDomainXml({
      ...spec,
      uuid: '0b7f1c1e-0000-4000-8000-000000000001',
      metadata: meta,
    });
    const info = parseDomainXml(xml, 'test');
    expect(info.meta).toEqual(meta);
    expect(info.uuid).toBe('0b7f1c1e-0000-4000-8000-000000000001');
    expect(info.nics.map((n) => n.mac)).toEqual(spec.nics.map((n) => n.mac));
  });

  it('finds nothing in a domain without it, and refuses a damaged one', () => {
    expect(parseDomainXml(renderDomainXml(spec), 'test').meta).toBeUndefined();
    const bad = renderDomainXml({ ...spec, metadata: meta }).replace(
      "generation='3'",
      "generation='x'",
    );
    expect(() => parseDomainXml(bad, 'dom')).toThrow(/'generation' is missing or not valid/);
  });

  it('renders the bare element virsh metadata --set takes', () => {
    const bare = renderVmMeta(meta, true);
    expect(bare.startsWith('<vm ')).toBe(true);
    expect(bare).not.toContain('xmlns');
    expect(bare).toContain("<disk id='root'");
  });
});
