import { childElements, firstChild, parseXml, textOf, type XmlElement } from '../disks/xml.ts';
import type { BootEntry, DiskUse } from '../store/types.ts';
import { ImgctlError } from '../util/errors.ts';

/** The namespace of the `<metadata>` element imgagent keeps in the domains it defines. */
export const VM_META_NS = 'https://imgctl.dev/xmlns/vm/1';

/** One disk of a VM generation, as imgagent made it. */
export interface VmMetaDisk {
  id: string;
  use: DiskUse;
  path: string;
  format: string;
  /** the blob a system disk is an overlay on */
  sha256?: string;
}

/**
 * What imgagent records in a domain it defines (docs/agent.md, "Updating a VM"): which
 * generation of the VM this definition is, what it was made from, and the generation it
 * replaced, so an update knows what to keep and a rollback where to go.
 */
export interface VmMeta {
  generation: number;
  /** the generation this one replaced, kept for --rollback */
  previous?: number;
  image: string;
  /** what the VM follows: NAME, NAME@REV or NAME@CHANNEL */
  reference: string;
  release?: string;
  record: string;
  system?: string;
  instance: string;
  /** sha256 of the plan it was made from (secrets redacted): same plan, nothing to update */
  fingerprint: string;
  /** none: no check ran (--virt); pending: defined, not yet seen healthy; ok */
  health: 'none' | 'pending' | 'ok';
  /** the check this generation declared: a marker on the serial console, within a timeout */
  healthSerial?: string;
  healthTimeoutMs?: number;
  virtPath: string;
  seed: string;
  serialLog: string;
  disks: VmMetaDisk[];
}

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
  metadata?: VmMeta;
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
    ...(spec.metadata ? [tag('metadata', {}, [renderVmMeta(spec.metadata)])] : []),
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

/**
 * The `<imgctl:vm>` element of a VM's metadata. `virsh metadata --set` takes it unqualified
 * (`bare`): libvirt puts it in the namespace of --uri under the prefix of --key.
 */
export function renderVmMeta(meta: VmMeta, bare = false): string {
  const prefix = bare ? '' : 'imgctl:';
  return tag(
    `${prefix}vm`,
    {
      'xmlns:imgctl': bare ? undefined : VM_META_NS,
      generation: meta.generation,
      previous: meta.previous,
      image: meta.image,
      reference: meta.reference,
      release: meta.release,
      record: meta.record,
      system: meta.system,
      instance: meta.instance,
      fingerprint: meta.fingerprint,
      health: meta.health,
      'health-serial': meta.healthSerial,
      'health-timeout-ms': meta.healthTimeoutMs,
      'virt-path': meta.virtPath,
      seed: meta.seed,
      'serial-log': meta.serialLog,
    },
    meta.disks.map((d) =>
      tag(`${prefix}disk`, {
        id: d.id,
        use: d.use,
        path: d.path,
        format: d.format,
        sha256: d.sha256,
      }),
    ),
  );
}

/** What a domain definition (virsh dumpxml) says: its UUID, nics and imgagent's metadata. */
export interface DomainInfo {
  uuid?: string;
  nics: DomainNic[];
  /** undefined for a domain imgagent did not define (or defined before it kept metadata) */
  meta?: VmMeta;
}

/** Reads a domain definition; its metadata is checked field by field (it is ours, but on disk). */
export function parseDomainXml(xml: string, what: string): DomainInfo {
  const root = parseXml(xml, what);
  const uuid = firstChild(root, 'uuid');
  const devices = firstChild(root, 'devices');
  const nics = devices
    ? childElements(devices, 'interface').map((el): DomainNic => {
        const source = firstChild(el, 'source')?.attrs ?? {};
        return {
          mac: firstChild(el, 'mac')?.attrs.address ?? '',
          model: firstChild(el, 'model')?.attrs.type ?? 'virtio',
          ...(source.bridge ? { bridge: source.bridge } : { network: source.network }),
        };
      })
    : [];
  const metadata = firstChild(root, 'metadata');
  const el = metadata?.children.find(
    (c) => c.name.endsWith(':vm') && Object.values(c.attrs).includes(VM_META_NS),
  );
  return { uuid: uuid ? textOf(uuid) : undefined, nics, meta: el && readVmMeta(el, what) };
}

function readVmMeta(el: XmlElement, what: string): VmMeta {
  const a = el.attrs;
  const bad = (field: string): never => {
    throw new ImgctlError(
      'VALIDATION',
      `${what}: imgctl metadata: '${field}' is missing or not valid`,
      {
        hint: 'the domain was edited by hand? make the VM again with imgagent --virt --force',
      },
    );
  };
  const text = (field: string) => a[field] ?? bad(field);
  const int = (field: string) => {
    const n = Number(a[field]);
    return Number.isSafeInteger(n) && n > 0 ? n : bad(field);
  };
  const health = text('health');
  if (health !== 'none' && health !== 'pending' && health !== 'ok') bad('health');
  return {
    generation: int('generation'),
    previous: a.previous === undefined ? undefined : int('previous'),
    image: text('image'),
    reference: text('reference'),
    release: a.release,
    record: text('record'),
    system: a.system,
    instance: text('instance'),
    fingerprint: text('fingerprint'),
    health: health as VmMeta['health'],
    healthSerial: a['health-serial'],
    healthTimeoutMs: a['health-timeout-ms'] === undefined ? undefined : int('health-timeout-ms'),
    virtPath: text('virt-path'),
    seed: text('seed'),
    serialLog: text('serial-log'),
    disks: el.children
      .filter((c) => c.name.endsWith(':disk'))
      .map((d) => ({
        id: d.attrs.id ?? bad('disk id'),
        use: (['system', 'data', 'scratch'].includes(d.attrs.use ?? '')
          ? d.attrs.use
          : bad('disk use')) as DiskUse,
        path: d.attrs.path ?? bad('disk path'),
        format: d.attrs.format ?? bad('disk format'),
        ...(d.attrs.sha256 ? { sha256: d.attrs.sha256 } : {}),
      })),
  };
}
