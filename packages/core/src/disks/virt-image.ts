/** virt-image descriptors (virt-image(5)) → image.yaml. docs/virt-image.md gives the mapping. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type { StagedBlob } from './blobs.ts';
import { descriptorDisk, type NewImage, placeNewImage, stageDiskFile } from './capture.ts';
import { ImgctlError } from '../util/errors.ts';
import { assertName, isValidName, printable } from '../util/names.ts';
import { formatSize } from '../util/sizes.ts';
import type { BootEntry, Disk, DiskUse, ImageDoc, Nic } from '../store/types.ts';
import { childElements, firstChild, parseXml, textOf, type XmlElement } from './xml.ts';

export interface VirtImageDisk {
  id: string;
  /** the id as written in the XML (drives refer to it) */
  xmlId: string;
  /** path relative to the XML file, as written */
  file: string;
  use: DiskUse;
  /** format as the XML states it (the content's format, from qemu-img, wins) */
  format: string;
  /** size in bytes as the XML states it (MB = MiB), when given */
  size?: number;
  checksums: Array<{ type: string; value: string }>;
}

export interface VirtImageConversion {
  name: string;
  doc: Omit<ImageDoc, 'apiVersion' | 'kind' | 'disks'>;
  disks: VirtImageDisk[];
  /** kernel and initrd files: path relative to the XML → path in the image directory */
  bootFiles: Array<{ file: string; rel: string }>;
  notReplicated: string[];
}

const ARCH_ALIASES: Record<string, string> = {
  i386: 'i686',
  i486: 'i686',
  i586: 'i686',
  i686: 'i686',
  x86_64: 'x86_64',
  amd64: 'x86_64',
  aarch64: 'aarch64',
  armv7l: 'armv7l',
  ppc64le: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
};

const FORMAT_MAP: Record<string, Disk['format'] | undefined> = {
  raw: 'raw',
  iso: 'raw',
  qcow2: 'qcow2',
  vmdk: 'vmdk',
  vdi: 'vdi',
  vhdx: 'vhdx',
};

/** A disk id from a virt-image disk id or file name: lower case, invalid characters as '-'. */
function diskId(raw: string, taken: Set<string>): string {
  let id = raw
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, '-')
    .replace(/\.\.+/g, '.')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 63);
  if (!isValidName(id)) id = 'disk';
  let unique = id;
  for (let n = 2; taken.has(unique); n++) unique = `${id.slice(0, 60)}-${n}`;
  taken.add(unique);
  return unique;
}

/**
 * Converts a parsed virt-image descriptor. Pure: no file is read. Whatever has no place in an
 * image.yaml is listed in `notReplicated`, never dropped silently.
 */
export function convertVirtImage(
  root: XmlElement,
  options: { as?: string } = {},
): VirtImageConversion {
  const notes: string[] = [];
  const bad = (message: string) =>
    new ImgctlError('VALIDATION', `virt-image descriptor: ${message}`);
  if (root.name !== 'image') throw bad(`the root element is <${root.name}>, not <image>`);
  const known = (el: XmlElement, names: string[], where: string) => {
    for (const c of el.children)
      if (!names.includes(c.name)) notes.push(`${where}/${c.name}: unknown element, ignored`);
  };
  known(root, ['name', 'label', 'description', 'domain', 'storage'], 'image');

  const nameEl = firstChild(root, 'name');
  const xmlName = nameEl ? textOf(nameEl) : '';
  const name = options.as ?? xmlName;
  if (!isValidName(name)) {
    throw new ImgctlError(
      'USAGE',
      `the virt-image name '${printable(xmlName)}' is not a valid image name`,
      {
        hint: 'give one with --as NAME',
      },
    );
  }
  const labels: Record<string, string> = {};
  if (nameEl?.attrs.version) labels['virt-image/version'] = nameEl.attrs.version;
  if (nameEl?.attrs.release) labels['virt-image/release'] = nameEl.attrs.release;
  if (options.as && xmlName && xmlName !== name) labels['virt-image/name'] = xmlName.slice(0, 200);
  const label = firstChild(root, 'label');
  const description = firstChild(root, 'description');

  // storage first: boot drives refer to its disk ids
  const storage = firstChild(root, 'storage');
  if (!storage) throw bad('no <storage> section');
  known(storage, ['disk'], 'storage');
  const taken = new Set<string>();
  const disks: VirtImageDisk[] = [];
  const byXmlId = new Map<string, VirtImageDisk>();
  for (const [i, el] of childElements(storage, 'disk').entries()) {
    const file = el.attrs.file;
    if (!file) throw bad(`storage disk ${i + 1} has no file`);
    const xmlId = el.attrs.id ?? file;
    if (byXmlId.has(xmlId)) throw bad(`disk '${printable(xmlId)}' is defined twice`);
    const useRaw = el.attrs.use ?? 'system';
    const use: DiskUse | undefined =
      useRaw === 'system'
        ? 'system'
        : useRaw === 'user'
          ? 'data'
          : useRaw === 'scratch'
            ? 'scratch'
            : undefined;
    if (!use) throw bad(`disk '${printable(xmlId)}' has the unknown use '${printable(useRaw)}'`);
    const format = el.attrs.format ?? 'raw';
    if (format === 'iso')
      notes.push(`disk '${xmlId}': format iso is kept as a raw disk (imgctl has no cdrom disks)`);
    let size: number | undefined;
    if (el.attrs.size !== undefined) {
      const mb = Number(el.attrs.size);
      if (!Number.isFinite(mb) || mb < 0)
        throw bad(`disk '${printable(xmlId)}' has the size '${printable(el.attrs.size)}'`);
      size = Math.round(mb * 1024 * 1024);
    }
    for (const attr of Object.keys(el.attrs))
      if (!['file', 'id', 'use', 'format', 'size'].includes(attr))
        notes.push(`disk '${xmlId}': attribute ${attr} ignored`);
    const checksums = childElements(el, 'checksum').map((c) => ({
      type: (c.attrs.type ?? '').toLowerCase(),
      value: textOf(c).toLowerCase(),
    }));
    const id = diskId(xmlId, taken);
    if (id !== xmlId)
      notes.push(`disk '${xmlId}' is named '${id}' (disk ids are names: a-z, 0-9, '.', '_', '-')`);
    const disk: VirtImageDisk = { id, xmlId, file, use, format, size, checksums };
    disks.push(disk);
    byXmlId.set(xmlId, disk);
  }
  if (disks.length === 0) throw bad('<storage> lists no disk');

  const domain = firstChild(root, 'domain');
  if (!domain) throw bad('no <domain> section');
  known(domain, ['boot', 'devices'], 'domain');
  const bootFiles: VirtImageConversion['bootFiles'] = [];
  const boot: BootEntry[] = [];
  for (const [i, b] of childElements(domain, 'boot').entries()) {
    const where = `boot ${i + 1} (${b.attrs.type ?? '?'})`;
    const type = b.attrs.type;
    if (type !== 'hvm' && type !== 'xen') throw bad(`${where}: type must be hvm or xen`);
    const guest = firstChild(b, 'guest');
    const archText = guest && firstChild(guest, 'arch') ? textOf(firstChild(guest, 'arch')!) : '';
    const arch = ARCH_ALIASES[archText];
    if (!arch) {
      notes.push(
        `${where}: architecture '${archText || 'none'}' is not representable; this boot entry is left out`,
      );
      continue;
    }
    const entry: BootEntry = { type, arch, drives: [] };
    const featuresEl = guest ? firstChild(guest, 'features') : undefined;
    if (featuresEl) {
      const features: string[] = [];
      for (const f of featuresEl.children) {
        if ((f.attrs.state ?? 'on') === 'off')
          notes.push(
            `${where}: feature ${f.name} state="off" (imgctl lists required features only)`,
          );
        else if (/^[a-z0-9_]+$/.test(f.name)) features.push(f.name);
        else notes.push(`${where}: feature '${f.name}' is not representable`);
      }
      if (features.length > 0) entry.features = [...new Set(features)];
    }
    const os = firstChild(b, 'os');
    const loaderEl = os ? firstChild(os, 'loader') : undefined;
    const kernelEl = os ? firstChild(os, 'kernel') : undefined;
    if (loaderEl && textOf(loaderEl) !== '')
      notes.push(
        `${where}: loader '${textOf(loaderEl)}' (a host bootloader such as pygrub) is not representable; the guest boots from its disk`,
      );
    if (kernelEl) {
      const file = textOf(kernelEl);
      entry.kernel = bootFile(file, bootFiles, bad);
      const initrdEl = firstChild(os!, 'initrd');
      if (initrdEl) entry.initrd = bootFile(textOf(initrdEl), bootFiles, bad);
      const cmdlineEl = firstChild(os!, 'cmdline');
      if (cmdlineEl) entry.cmdline = textOf(cmdlineEl);
      if (loaderEl) notes.push(`${where}: both a loader and a kernel; the kernel is used`);
    } else {
      const dev = loaderEl?.attrs.dev ?? 'hd';
      if (dev !== 'hd' && dev !== 'cdrom') throw bad(`${where}: loader dev must be hd or cdrom`);
      entry.loader = dev;
    }
    for (const d of childElements(b, 'drive')) {
      const disk = byXmlId.get(d.attrs.disk ?? '');
      if (!disk)
        throw bad(`${where}: drive names the unknown disk '${printable(d.attrs.disk ?? '')}'`);
      const target = d.attrs.target ?? '';
      if (!/^(vd|hd|sd|xvd)[a-z]$/.test(target)) {
        notes.push(
          `${where}: drive ${disk.xmlId} target '${target}' is not representable; left out`,
        );
        continue;
      }
      entry.drives.push({ disk: disk.id, target });
    }
    if (entry.loader !== undefined && entry.drives.length === 0) {
      notes.push(`${where}: boots from a disk but maps no drive; this boot entry is left out`);
      continue;
    }
    boot.push(entry);
  }
  if (boot.length === 0) throw bad('no boot entry imgctl can represent (see the warnings)');

  const devices = firstChild(domain, 'devices');
  let vcpus = 1;
  let memory = '512MiB';
  const nics: Nic[] = [];
  let graphics: 'none' | 'vnc' | 'spice' = 'none';
  if (devices) {
    known(devices, ['vcpu', 'memory', 'interface', 'graphics'], 'devices');
    const v = firstChild(devices, 'vcpu');
    if (v) {
      vcpus = Number(textOf(v));
      if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 1024)
        throw bad(`vcpu '${printable(textOf(v))}' is not a count`);
    }
    const m = firstChild(devices, 'memory');
    if (m) {
      const kib = Number(textOf(m));
      if (!Number.isSafeInteger(kib) || kib < 1)
        throw bad(`memory '${printable(textOf(m))}' is not a KiB count`);
      memory = formatSize(kib * 1024);
    } else notes.push('devices/memory is not given; 512MiB is used');
    for (const _ of childElements(devices, 'interface'))
      nics.push({ model: 'virtio', network: 'default' });
    const g = firstChild(devices, 'graphics');
    if (g) {
      graphics = g.attrs.type === 'spice' ? 'spice' : 'vnc';
      if (g.attrs.type && g.attrs.type !== 'vnc' && g.attrs.type !== 'spice')
        notes.push(`graphics type '${g.attrs.type}' is not representable; vnc is used`);
    }
  } else notes.push('domain/devices is not given; 1 vcpu and 512MiB are used');

  const doc: VirtImageConversion['doc'] = {
    name,
    ...(label && textOf(label) ? { label: textOf(label) } : {}),
    ...(description && textOf(description)
      ? { description: textOf(description).replace(/\s+/g, ' ') }
      : {}),
    revision: 1,
    os: { family: 'linux', arch: boot[0]!.arch },
    ...(Object.keys(labels).length > 0 ? { labels } : {}),
    boot,
    devices: { vcpus, memory, ...(nics.length > 0 ? { nics } : {}), graphics, console: 'serial' },
    parameters: {},
    provision: {},
  };
  return { name, doc, disks, bootFiles, notReplicated: notes };
}

function bootFile(
  file: string,
  files: VirtImageConversion['bootFiles'],
  bad: (m: string) => ImgctlError,
): string {
  if (!isRelativeInside(file))
    throw bad(`'${printable(file)}' is not a path inside the descriptor's directory`);
  const existing = files.find((f) => f.file === file);
  if (existing) return existing.rel;
  const rel = `boot/${file.replace(/[^A-Za-z0-9._+/-]/g, '_')}`;
  files.push({ file, rel });
  return rel;
}

/** A relative path with no '..' and no absolute start: it names something under the base. */
function isRelativeInside(path: string): boolean {
  return (
    path !== '' &&
    !isAbsolute(path) &&
    !path.includes('\0') &&
    !path.split(/[\\/]/).some((s) => s === '..')
  );
}

export interface VirtImageResult {
  image: string;
  source: string;
  disks: Array<{
    id: string;
    use: DiskUse;
    format: Disk['format'];
    size: string;
    sha256?: string;
    file: string;
  }>;
  files: string[];
  /** what the descriptor says that image.yaml cannot hold */
  notReplicated: string[];
}

/**
 * Imports an appliance described by a virt-image XML descriptor: converts the descriptor,
 * checks every file it names stays inside the descriptor's directory, verifies the stated
 * checksums (sha256, sha1, md5) and reads format and size from the content (qemu-img), then
 * creates the image in one step. A checksum mismatch is INTEGRITY (exit 7); nothing enters the
 * store until every disk has been verified.
 */
export async function importVirtImage(
  storeDir: string,
  xmlFile: string,
  options: { as?: string; force?: boolean } = {},
): Promise<VirtImageResult> {
  if (options.as !== undefined) assertName('image', options.as);
  const path = resolve(xmlFile);
  let xml: string;
  try {
    xml = await readFile(path, 'utf8');
  } catch {
    throw new ImgctlError('NOT_FOUND', `no descriptor at ${path}`);
  }
  const conversion = convertVirtImage(parseXml(xml, xmlFile), options);
  const base = await realpath(dirname(path));
  const inside = async (rel: string): Promise<string> => {
    if (!isRelativeInside(rel))
      throw new ImgctlError(
        'VALIDATION',
        `virt-image descriptor: '${printable(rel)}' leaves the descriptor's directory`,
      );
    let real: string;
    try {
      real = await realpath(join(base, rel));
    } catch {
      throw new ImgctlError(
        'NOT_FOUND',
        `virt-image descriptor names ${printable(rel)}, which does not exist next to it`,
      );
    }
    if (!real.startsWith(base + sep))
      throw new ImgctlError(
        'VALIDATION',
        `virt-image descriptor: '${printable(rel)}' resolves outside the descriptor's directory`,
      );
    if (!(await stat(real)).isFile())
      throw new ImgctlError(
        'VALIDATION',
        `virt-image descriptor: '${printable(rel)}' is not a regular file`,
      );
    return real;
  };
  const notes = [...conversion.notReplicated];
  const staged: StagedBlob[] = [];
  try {
    const disks: VirtImageResult['disks'] = [];
    for (const disk of conversion.disks) {
      if (disk.use === 'scratch') {
        if (disk.size === undefined)
          throw new ImgctlError(
            'VALIDATION',
            `virt-image descriptor: scratch disk '${disk.xmlId}' needs a size`,
          );
        const format = FORMAT_MAP[disk.format];
        if (!format)
          throw new ImgctlError(
            'VALIDATION',
            `virt-image descriptor: disk '${disk.xmlId}' has the unsupported format '${printable(disk.format)}'`,
          );
        notes.push(
          `scratch disk '${disk.xmlId}': its file is not imported (scratch disks are created empty, ${formatSize(disk.size)})`,
        );
        disks.push({
          id: disk.id,
          use: 'scratch',
          format,
          size: formatSize(disk.size),
          file: disk.file,
        });
        continue;
      }
      const file = await inside(disk.file);
      await verifyChecksums(file, disk, notes);
      const { staged: blob, info } = await stageDiskFile(storeDir, file);
      staged.push(blob);
      const sha256 = disk.checksums.find((c) => c.type === 'sha256');
      if (sha256 && sha256.value !== blob.sha256)
        throw checksumError(disk, 'sha256', blob.sha256, sha256.value);
      if (FORMAT_MAP[disk.format] !== info.format)
        notes.push(
          `disk '${disk.xmlId}': the descriptor says ${disk.format}, the content is ${info.format}; ${info.format} is used`,
        );
      if (disk.size !== undefined && disk.size !== info.virtualSize)
        notes.push(
          `disk '${disk.xmlId}': the descriptor says ${formatSize(disk.size)}, the content is ${formatSize(info.virtualSize)}; the content's size is used`,
        );
      disks.push({
        id: disk.id,
        use: disk.use,
        format: info.format as Disk['format'],
        size: formatSize(info.virtualSize),
        sha256: blob.sha256,
        file: disk.file,
      });
    }
    const copies: NonNullable<NewImage['copies']> = [];
    for (const b of conversion.bootFiles) copies.push({ rel: b.rel, from: await inside(b.file) });
    const doc: NewImage['doc'] = {
      ...conversion.doc,
      disks: disks.map(descriptorDisk),
    };
    const notesMd = notes.map((n) => `- ${n}`).join('\n');
    const files = await placeNewImage(storeDir, {
      name: conversion.name,
      doc,
      description: `# ${conversion.name}\n\n${conversion.doc.description ?? ''}\n\nImported from the virt-image descriptor ${xmlFile.split(/[\\/]/).pop()}.\n${notesMd ? `\nNot representable in image.yaml:\n\n${notesMd}\n` : ''}`,
      copies,
      blobs: staged,
      force: options.force,
    });
    return { image: conversion.name, source: path, disks, files, notReplicated: notes };
  } finally {
    for (const blob of staged) await blob.discard().catch(() => undefined);
  }
}

function checksumError(
  disk: VirtImageDisk,
  type: string,
  actual: string,
  expected: string,
): ImgctlError {
  return new ImgctlError(
    'INTEGRITY',
    `disk '${disk.xmlId}' (${disk.file}) does not match its ${type} checksum: ${actual}, expected ${expected}`,
    {
      hint: 'the file is damaged or is not the one the descriptor describes; nothing was imported',
    },
  );
}

/** Checks the md5 and sha1 checksums (sha256 is checked on the staged copy); unknown types are reported. */
async function verifyChecksums(file: string, disk: VirtImageDisk, notes: string[]): Promise<void> {
  const others = disk.checksums.filter((c) => c.type === 'md5' || c.type === 'sha1');
  for (const c of disk.checksums)
    if (!['md5', 'sha1', 'sha256'].includes(c.type))
      notes.push(`disk '${disk.xmlId}': checksum type '${c.type}' cannot be verified; ignored`);
  if (others.length === 0) return;
  const hashes = others.map((c) => ({ c, hash: createHash(c.type) }));
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }))
    for (const h of hashes) h.hash.update(chunk as Buffer);
  for (const { c, hash } of hashes) {
    const actual = hash.digest('hex');
    if (actual !== c.value) throw checksumError(disk, c.type, actual, c.value);
  }
}
