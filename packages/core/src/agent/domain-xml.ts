import type { BootEntry } from '../store/types.ts';

/** One disk of a domain, as a path on the host. */
export interface DomainDisk {
  path: string;
  format: string;
  /** guest target: vda, hdc, sda, xvda */
  target: string;
  device: 'disk' | 'cdrom';
}

export interface DomainNic {
  mac: string;
  model: string;
  network?: string;
  bridge?: string;
}

export interface DomainSpec {
  name: string;
  uuid?: string;
  virtType: 'kvm' | 'qemu';
  memoryBytes: number;
  vcpus: number;
  boot: BootEntry;
  /** host paths of the boot entry's kernel and initrd, when it boots a kernel directly */
  kernelPath?: string;
  initrdPath?: string;
  disks: DomainDisk[];
  nics: DomainNic[];
  /** serial console output goes to this file (and the console stays a pty too) */
  serialLog?: string;
  graphics: 'none' | 'vnc' | 'spice';
  description?: string;
}

/** Escapes text for XML content and attribute values. */
function escapeXml(text: string): string {
  return text.replace(
    /[<>&'"]/g,
    (c) => `&${{ '<': 'lt', '>': 'gt', '&': 'amp', "'": 'apos', '"': 'quot' }[c]};`,
  );
}

type Attrs = Record<string, string | number | undefined>;

function tag(name: string, attrs: Attrs = {}, children?: string | string[]): string {
  const attrText = Object.entries(attrs)
    .filter((entry): entry is [string, string | number] => entry[1] !== undefined)
    .map(([k, v]) => ` ${k}='${escapeXml(String(v))}'`)
    .join('');
  if (children === undefined) return `<${name}${attrText}/>`;
  if (typeof children === 'string') return `<${name}${attrText}>${escapeXml(children)}</${name}>`;
  return `<${name}${attrText}>\n${indent(children.join('\n'))}\n</${name}>`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}

/** The bus a guest target name implies: vdX virtio, hdX ide, sdX sata, xvdX xen. */
export function busOf(target: string): 'virtio' | 'ide' | 'sata' | 'xen' {
  if (target.startsWith('vd')) return 'virtio';
  if (target.startsWith('hd')) return 'ide';
  if (target.startsWith('sd')) return 'sata';
  if (target.startsWith('xvd')) return 'xen';
  throw new Error(`unknown disk target '${target}'`);
}

/** A libvirt domain definition for `virsh define`; every value from outside is escaped. */
export function renderDomainXml(spec: DomainSpec): string {
  const boot = spec.boot;
  const os: string[] = [tag('type', { arch: boot.arch }, boot.type)];
  if (boot.kernel) {
    if (spec.kernelPath) os.push(tag('kernel', {}, spec.kernelPath));
    if (spec.initrdPath) os.push(tag('initrd', {}, spec.initrdPath));
    if (boot.cmdline) os.push(tag('cmdline', {}, boot.cmdline));
  } else {
    os.push(tag('boot', { dev: boot.loader ?? 'hd' }));
  }
  const features = (boot.features ?? []).filter((f) => ['acpi', 'apic', 'pae'].includes(f));
  const devices: string[] = [];
  for (const disk of spec.disks) {
    devices.push(
      tag('disk', { type: 'file', device: disk.device }, [
        tag('driver', { name: 'qemu', type: disk.format }),
        tag('source', { file: disk.path }),
        tag('target', { dev: disk.target, bus: busOf(disk.target) }),
        ...(disk.device === 'cdrom' ? [tag('readonly')] : []),
      ]),
    );
  }
  for (const nic of spec.nics) {
    const source = nic.bridge
      ? tag('source', { bridge: nic.bridge })
      : tag('source', { network: nic.network ?? 'default' });
    devices.push(
      tag('interface', { type: nic.bridge ? 'bridge' : 'network' }, [
        tag('mac', { address: nic.mac }),
        source,
        tag('model', { type: nic.model }),
      ]),
    );
  }
  if (spec.serialLog) {
    devices.push(
      tag('serial', { type: 'file' }, [
        tag('source', { path: spec.serialLog }),
        tag('target', { port: 0 }),
      ]),
    );
  } else {
    devices.push(tag('serial', { type: 'pty' }, [tag('target', { port: 0 })]));
  }
  devices.push(tag('console', { type: 'pty' }, [tag('target', { type: 'serial', port: 0 })]));
  if (spec.graphics !== 'none')
    devices.push(tag('graphics', { type: spec.graphics, autoport: 'yes', listen: '127.0.0.1' }));
  const memoryKiB = Math.ceil(spec.memoryBytes / 1024);
  return `${tag('domain', { type: spec.virtType }, [
    tag('name', {}, spec.name),
    ...(spec.uuid ? [tag('uuid', {}, spec.uuid)] : []),
    ...(spec.description ? [tag('description', {}, spec.description)] : []),
    tag('memory', { unit: 'KiB' }, String(memoryKiB)),
    tag('currentMemory', { unit: 'KiB' }, String(memoryKiB)),
    tag('vcpu', {}, String(spec.vcpus)),
    tag('os', boot.firmware === 'uefi' ? { firmware: 'efi' } : {}, os),
    ...(features.length > 0
      ? [
          tag(
            'features',
            {},
            features.map((f) => tag(f)),
          ),
        ]
      : []),
    tag('on_poweroff', {}, 'destroy'),
    tag('on_reboot', {}, 'restart'),
    tag('on_crash', {}, 'destroy'),
    tag('devices', {}, devices),
  ])}\n`;
}
