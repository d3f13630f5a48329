import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busOf, renderDomainXml, type DomainSpec } from './domain-xml.ts';

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
