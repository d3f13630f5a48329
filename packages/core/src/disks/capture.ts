import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { type StagedBlob, stageBlobFromFile } from './blobs.ts';
import { formatProblem, parseYaml, syncDirectory } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { withStoreLock } from '../store/lock.ts';
import { assertName, printable } from '../util/names.ts';
import { processRunner } from '../util/process.ts';
import { type QemuImgInfo, qemuImgInfo } from './qemu-img.ts';
import * as scaffold from '../store/scaffold.ts';
import { formatSize } from '../util/sizes.ts';
import { exists, storePaths } from '../store/store.ts';
import type { BootEntry, Disk, DiskUse, ImageDoc, Nic } from '../store/types.ts';
import { validateDocument } from '../validate/document.ts';
import { childElements, firstChild, parseXml, textOf } from './xml.ts';
import { stringifyYaml } from '../yaml/yaml-edit.ts';

const FORMATS: ReadonlyArray<Disk['format']> = ['raw', 'qcow2', 'vmdk', 'vdi', 'vhdx'];
const USES: readonly DiskUse[] = ['system', 'data', 'scratch'];
const ARCHES = ['x86_64', 'i686', 'aarch64', 'armv7l', 'ppc64le', 's390x', 'riscv64'];
const runner = processRunner();

export interface CapturedDisk {
  id: string;
  use: DiskUse;
  format: Disk['format'];
  size: string;
  sha256?: string;
  /** where the content came from */
  source?: string;
}

export interface CaptureResult {
  image: string;
  disks: CapturedDisk[];
  /** what the source had that the descriptor cannot hold; also printed as warnings */
  notReplicated: string[];
  files: string[];
}

/** A disk file checked with qemu-img, its bytes staged (hashed) in the store, not yet a blob. */
export interface StagedDisk {
  staged: StagedBlob;
  info: QemuImgInfo;
}

/** A disk's descriptor entry; content (when there is any) is a blob of this store. */
export function descriptorDisk(d: Pick<Disk, 'id' | 'use' | 'format' | 'size' | 'sha256'>): Disk {
  return {
    id: d.id,
    use: d.use,
    format: d.format,
    size: d.size,
    ...(d.sha256 ? { sha256: d.sha256, blob: true } : {}),
  };
}

/**
 * Checks `file` is a self-contained disk image (no backing or data file; a format images may
 * carry), then stages its content, and checks the staged bytes again: what is checked is what
 * is kept.
 */
export async function stageDiskFile(storeDir: string, file: string): Promise<StagedDisk> {
  checkDiskInfo(file, await qemuImgInfo(file));
  const staged = await stageBlobFromFile(storeDir, file);
  try {
    return { staged, info: checkDiskInfo(file, await qemuImgInfo(staged.path)) };
  } catch (error) {
    await staged.discard();
    throw error;
  }
}

function checkDiskInfo(file: string, info: QemuImgInfo): QemuImgInfo {
  const refuse = (message: string) =>
    new ImgctlError('VALIDATION', `${printable(file)}: ${message}`, {
      hint: 'give a self-contained raw, qcow2, vmdk, vdi or vhdx file (flatten with qemu-img convert)',
    });
  if (info.backingFile !== undefined)
    throw refuse(`has a backing file (${printable(info.backingFile)}), which can point anywhere`);
  if (info.dataFile !== undefined) throw refuse('has an external data file');
  if (!FORMATS.includes(info.format as Disk['format']))
    throw refuse(`unsupported disk format '${info.format}'`);
  if (
    info.format === 'vmdk' &&
    !['monolithicSparse', 'streamOptimized'].includes(info.vmdkCreateType ?? '')
  )
    throw refuse('vmdk that names extent files outside itself');
  if (info.corrupt || info.dirty) throw refuse('qemu-img reports it corrupt or not closed cleanly');
  return info;
}

export interface NewImage {
  name: string;
  doc: Omit<ImageDoc, 'apiVersion' | 'kind'>;
  description: string;
  /** files copied into the image directory: relative path → source file */
  copies?: Array<{ rel: string; from: string }>;
  /** staged blobs committed (under the lock) before the image appears */
  blobs: StagedBlob[];
  force?: boolean;
}

/** The keys of a descriptor in the order imgctl writes them. */
const KEY_ORDER = [
  'apiVersion',
  'kind',
  'name',
  'label',
  'description',
  'revision',
  'parent',
  'os',
  'labels',
  'boot',
  'devices',
  'disks',
  'parameters',
  'provision',
  'requires',
];

function descriptorText(doc: NewImage['doc']): string {
  const full: Record<string, unknown> = { apiVersion: 'imgctl/v1', kind: 'Image', ...doc };
  const ordered: Record<string, unknown> = {};
  for (const key of KEY_ORDER) if (full[key] !== undefined) ordered[key] = full[key];
  return stringifyYaml(ordered);
}

/**
 * Creates a new image from generated parts: image.yaml (validated first), description.md,
 * records/default.yaml and copied files, built under .state/ and renamed into images/ in one
 * step under the store lock, after the staged blobs are committed. CONFLICT when the image
 * exists, unless `force` (then the old one is replaced).
 */
export async function placeNewImage(storeDir: string, image: NewImage): Promise<string[]> {
  const { name } = image;
  const yamlText = descriptorText(image.doc);
  const display = storePaths.rel.imageFile(name);
  const problems = validateDocument('Image', parseYaml(display, yamlText), { expectedName: name });
  if (problems.length > 0) {
    throw new ImgctlError('VALIDATION', `the generated ${display} is not valid`, {
      details: problems.map(formatProblem),
      hint: 'this is a bug in the conversion, or the source holds values imgctl cannot take',
    });
  }
  const files = ['image.yaml', 'description.md', 'records/default.yaml'];
  return withStoreLock(storeDir, async () => {
    const target = storePaths.imageDir(storeDir, name);
    const present = await exists(target);
    if (present && !image.force) {
      throw new ImgctlError('CONFLICT', `image '${name}' already exists`, {
        hint: 'pick another name, or pass --force to replace it',
      });
    }
    const tmp = join(storeDir, '.state', `new-image-${name}-${randomBytes(4).toString('hex')}`);
    await mkdir(join(tmp, 'records'), { recursive: true });
    try {
      await writeFile(join(tmp, 'image.yaml'), yamlText);
      await writeFile(join(tmp, 'description.md'), image.description);
      await writeFile(join(tmp, 'records/default.yaml'), scaffold.recordYaml(name, 'default'));
      for (const copy of image.copies ?? []) {
        await mkdir(dirname(join(tmp, copy.rel)), { recursive: true });
        await copyFile(copy.from, join(tmp, copy.rel));
        files.push(copy.rel);
      }
      for (const blob of image.blobs) await blob.commit();
      await mkdir(storePaths.imagesDir(storeDir), { recursive: true });
      if (present) await rename(target, join(tmp, '.replaced'));
      await rename(tmp, target);
      await syncDirectory(storePaths.imagesDir(storeDir));
      if (present) await rm(join(target, '.replaced'), { recursive: true, force: true });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return files.sort();
  });
}

function hostArch(): string {
  const map: Record<string, string> = {
    x64: 'x86_64',
    arm64: 'aarch64',
    ia32: 'i686',
    arm: 'armv7l',
  };
  return map[process.arch] ?? 'x86_64';
}

function targetFor(index: number): string {
  return `vd${String.fromCharCode(97 + index)}`;
}

export interface CaptureFromDisksOptions {
  files: string[];
  /** use of each file, in order; default: the first system, the others data */
  uses?: string[];
}

/** A new image from disk files: format and size from qemu-img, content into the store. */
export async function captureFromDisks(
  storeDir: string,
  name: string,
  options: CaptureFromDisksOptions,
): Promise<CaptureResult> {
  assertName('image', name);
  if (options.files.length === 0)
    throw new ImgctlError('USAGE', 'give at least one --from-disk FILE');
  if (options.files.length > 26) throw new ImgctlError('USAGE', 'at most 26 disks');
  const uses = options.files.map((_, i) => options.uses?.[i] ?? (i === 0 ? 'system' : 'data'));
  if (options.uses && options.uses.length !== options.files.length) {
    throw new ImgctlError(
      'USAGE',
      `--use lists ${options.uses.length} use(s) for ${options.files.length} disk(s)`,
      { hint: 'give one use per --from-disk file, e.g. --use system,data' },
    );
  }
  for (const use of uses) {
    if (!USES.includes(use as DiskUse))
      throw new ImgctlError('USAGE', `unknown disk use '${printable(use)}'`, {
        hint: 'uses: system, data, scratch',
      });
  }
  if (await exists(storePaths.imageDir(storeDir, name))) {
    throw new ImgctlError('CONFLICT', `image '${name}' already exists`, {
      hint: 'pick another name',
    });
  }
  const sources = options.files.map((file, i) => ({
    id: targetFor(i),
    file: resolve(file),
    use: uses[i] as DiskUse,
    target: targetFor(i),
  }));
  return captureDisks(storeDir, name, sources, {
    label: name,
    description: `Captured from ${options.files.map((f) => basename(f)).join(', ')}.`,
    boot: {
      type: 'hvm',
      arch: hostArch(),
      features: ['acpi', 'apic'],
      firmware: 'bios',
      loader: 'hd',
    },
    devices: {
      vcpus: 1,
      memory: '512MiB',
      nics: [{ model: 'virtio', network: 'default' }],
      graphics: 'none',
      console: 'serial',
    },
    notReplicated: [],
  });
}

interface DiskSource {
  id: string;
  file: string;
  use: DiskUse;
  target: string;
}

interface CaptureShape {
  label: string;
  description: string;
  boot: Omit<BootEntry, 'drives'>;
  devices: ImageDoc['devices'];
  os?: ImageDoc['os'];
  copies?: Array<{ rel: string; from: string }>;
  notReplicated: string[];
  force?: boolean;
}

async function captureDisks(
  storeDir: string,
  name: string,
  sources: DiskSource[],
  shape: CaptureShape,
): Promise<CaptureResult> {
  const staged: StagedBlob[] = [];
  try {
    const disks: CapturedDisk[] = [];
    for (const source of sources) {
      const { staged: blob, info } = await stageDiskFile(storeDir, source.file);
      if (source.use === 'scratch') {
        await blob.discard();
        disks.push({
          id: source.id,
          use: 'scratch',
          format: info.format as Disk['format'],
          size: formatSize(info.virtualSize),
          source: source.file,
        });
        continue;
      }
      staged.push(blob);
      disks.push({
        id: source.id,
        use: source.use,
        format: info.format as Disk['format'],
        size: formatSize(info.virtualSize),
        sha256: blob.sha256,
        source: source.file,
      });
    }
    const doc: NewImage['doc'] = {
      name,
      label: shape.label,
      description: shape.description,
      revision: 1,
      os: shape.os ?? { family: 'linux', arch: shape.boot.arch },
      boot: [{ ...shape.boot, drives: sources.map((s) => ({ disk: s.id, target: s.target })) }],
      devices: shape.devices,
      disks: disks.map(descriptorDisk),
      parameters: {},
      provision: {},
    };
    const notes = shape.notReplicated.map((n) => `- ${n}`).join('\n');
    const files = await placeNewImage(storeDir, {
      name,
      doc,
      description: `# ${name}\n\n${shape.description}\n${notes ? `\nNot carried over from the source:\n\n${notes}\n` : ''}`,
      copies: shape.copies,
      blobs: staged,
      force: shape.force,
    });
    return { image: name, disks, notReplicated: shape.notReplicated, files };
  } finally {
    for (const blob of staged) await blob.discard().catch(() => undefined);
  }
}

/** Runs virsh with an argument array; a stub in unit tests. */
export type VirshRunner = (args: string[]) => Promise<string>;

const runVirsh: VirshRunner = async (args) => {
  try {
    const result = await runner.run('virsh', args, {
      env: { LC_ALL: 'C' },
      extendEnv: true,
      timeout: 60_000,
    });
    return result.stdout;
  } catch (error) {
    const e = error as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT')
      throw new ImgctlError('HOST', 'virsh is not installed', {
        hint: 'install it (Debian: apt-get install libvirt-clients)',
      });
    const message =
      String(e.stderr || e.shortMessage)
        .split('\n')
        .find((l) => l.trim() !== '') ?? 'failed';
    throw new ImgctlError(
      /failed to get domain|Domain not found/i.test(message) ? 'NOT_FOUND' : 'FAILED',
      `virsh ${args.filter((a) => a !== '--connect').join(' ')}: ${message.replace(/^error: /, '')}`,
    );
  }
};

export interface CaptureFromDomainOptions {
  domain: string;
  /** libvirt URI (virsh --connect) */
  connect?: string;
  /** capture even while the domain runs (its disks may be inconsistent) */
  force?: boolean;
  virsh?: VirshRunner;
}

/** What a libvirt domain's XML says, in imgctl's terms, and what it says that imgctl cannot hold. */
export interface DomainShape {
  vcpus: number;
  memory: string;
  arch: string;
  type: 'hvm' | 'xen';
  features: string[];
  loader: 'hd' | 'cdrom';
  firmware: 'bios' | 'uefi';
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  disks: Array<{ file: string; target: string; format?: string; use: DiskUse }>;
  nics: Nic[];
  graphics: 'none' | 'vnc' | 'spice';
  notReplicated: string[];
}

/** Reads the parts of a libvirt domain XML an image descriptor can hold. Pure. */
export function readDomainXml(xml: string): DomainShape {
  const root = parseXml(xml, 'domain XML');
  if (root.name !== 'domain')
    throw new ImgctlError('VALIDATION', 'the XML is not a libvirt <domain>');
  const notes: string[] = [];
  const os = firstChild(root, 'os');
  const typeEl = os ? firstChild(os, 'type') : undefined;
  const osType = typeEl ? textOf(typeEl) : 'hvm';
  const type: 'hvm' | 'xen' = osType === 'xen' || osType === 'linux' ? 'xen' : 'hvm';
  if (osType !== 'hvm' && type === 'hvm')
    notes.push(`os type '${osType}' is not hvm or xen; captured as hvm`);
  let arch = typeEl?.attrs.arch ?? hostArch();
  if (arch === 'i386' || arch === 'i586') arch = 'i686';
  if (!ARCHES.includes(arch)) {
    notes.push(`architecture '${arch}' is not one imgctl knows; captured as ${hostArch()}`);
    arch = hostArch();
  }
  const memoryEl = firstChild(root, 'memory');
  const memory = memoryEl
    ? toBytes(textOf(memoryEl), memoryEl.attrs.unit ?? 'KiB')
    : 512 * 1024 * 1024;
  const vcpuEl = firstChild(root, 'vcpu');
  const vcpus = vcpuEl ? Number.parseInt(textOf(vcpuEl), 10) || 1 : 1;
  const bootDevs = os ? childElements(os, 'boot').map((b) => b.attrs.dev ?? '') : [];
  const loader = bootDevs[0] === 'cdrom' ? 'cdrom' : 'hd';
  for (const dev of bootDevs)
    if (dev !== 'hd' && dev !== 'cdrom')
      notes.push(`boot device '${dev}' (imgctl boots from hd or cdrom)`);
  const loaderEl = os ? firstChild(os, 'loader') : undefined;
  const firmware =
    os?.attrs.firmware === 'efi' || loaderEl?.attrs.type === 'pflash' ? 'uefi' : 'bios';
  const kernel = os && firstChild(os, 'kernel') ? textOf(firstChild(os, 'kernel')!) : undefined;
  const initrd = os && firstChild(os, 'initrd') ? textOf(firstChild(os, 'initrd')!) : undefined;
  const cmdline = os && firstChild(os, 'cmdline') ? textOf(firstChild(os, 'cmdline')!) : undefined;
  const featuresEl = firstChild(root, 'features');
  const features = featuresEl
    ? featuresEl.children.map((f) => f.name).filter((f) => /^[a-z0-9_]+$/.test(f))
    : [];
  const devices = firstChild(root, 'devices');
  const disks: DomainShape['disks'] = [];
  const nics: Nic[] = [];
  let graphics: DomainShape['graphics'] = 'none';
  for (const disk of devices ? childElements(devices, 'disk') : []) {
    const target = firstChild(disk, 'target')?.attrs.dev ?? '?';
    const device = disk.attrs.device ?? 'disk';
    const source = firstChild(disk, 'source');
    if (device !== 'disk') {
      notes.push(
        `${device} ${target} (${source?.attrs.file ?? 'empty'}) is not captured: only disks are`,
      );
      continue;
    }
    if ((disk.attrs.type ?? 'file') !== 'file' || !source?.attrs.file) {
      notes.push(`disk ${target} of type '${disk.attrs.type}' is not a file and is not captured`);
      continue;
    }
    if (!/^(vd|hd|sd|xvd)[a-z]$/.test(target)) {
      notes.push(`disk ${target}: target name not representable; not captured`);
      continue;
    }
    disks.push({
      file: source.attrs.file,
      target,
      format: firstChild(disk, 'driver')?.attrs.type,
      use: disks.length === 0 ? 'system' : 'data',
    });
    if (firstChild(disk, 'readonly'))
      notes.push(`disk ${target} is read-only in the domain; imgctl attaches it read-write`);
  }
  for (const nic of devices ? childElements(devices, 'interface') : []) {
    const out: Nic = {};
    const model = firstChild(nic, 'model')?.attrs.type;
    const models = ['virtio', 'e1000', 'e1000e', 'rtl8139', 'ne2k_pci', 'pcnet', 'vmxnet3'];
    if (model && models.includes(model)) out.model = model as Nic['model'];
    else if (model) notes.push(`interface model '${model}' is not supported; virtio is used`);
    const source = firstChild(nic, 'source');
    if (nic.attrs.type === 'network' && source?.attrs.network) out.network = source.attrs.network;
    else if (nic.attrs.type === 'bridge' && source?.attrs.bridge) out.bridge = source.attrs.bridge;
    else
      notes.push(`interface of type '${nic.attrs.type}' is captured as one on the default network`);
    const mac = firstChild(nic, 'mac')?.attrs.address;
    if (mac)
      notes.push(`interface MAC ${mac} is not kept: every VM made from the image gets its own`);
    nics.push(out);
  }
  const g = devices ? firstChild(devices, 'graphics') : undefined;
  if (g) {
    if (g.attrs.type === 'vnc' || g.attrs.type === 'spice') graphics = g.attrs.type;
    else notes.push(`graphics of type '${g.attrs.type}' is not supported; none is used`);
  }
  return {
    vcpus,
    memory: formatSize(memory),
    arch,
    type,
    features,
    loader,
    firmware,
    kernel,
    initrd,
    cmdline,
    disks,
    nics,
    graphics,
    notReplicated: notes,
  };
}

function toBytes(value: string, unit: string): number {
  const n = Number.parseInt(value, 10);
  const units: Record<string, number> = {
    b: 1,
    bytes: 1,
    k: 1024,
    kib: 1024,
    kb: 1000,
    m: 1024 ** 2,
    mib: 1024 ** 2,
    mb: 1e6,
    g: 1024 ** 3,
    gib: 1024 ** 3,
    gb: 1e9,
    t: 1024 ** 4,
    tib: 1024 ** 4,
    tb: 1e12,
  };
  const factor = units[unit.toLowerCase()];
  if (!Number.isSafeInteger(n) || factor === undefined)
    throw new ImgctlError(
      'VALIDATION',
      `cannot read the memory size '${printable(value)} ${printable(unit)}'`,
    );
  return n * factor;
}

/**
 * A new image from a libvirt domain (`virsh dumpxml`): its file-backed disks become the image's
 * disks (the first system, the others data), with memory, vcpus, nics, graphics, boot type,
 * architecture and features; direct-boot kernel and initrd are copied into the image under
 * boot/. A running domain is refused unless `force` (its disks may be mid-write).
 */
export async function captureFromDomain(
  storeDir: string,
  name: string,
  options: CaptureFromDomainOptions,
): Promise<CaptureResult> {
  assertName('image', name);
  const virsh = options.virsh ?? runVirsh;
  const connect = options.connect ? ['--connect', options.connect] : [];
  if (await exists(storePaths.imageDir(storeDir, name))) {
    throw new ImgctlError('CONFLICT', `image '${name}' already exists`, {
      hint: 'pick another name',
    });
  }
  const xml = await virsh([...connect, 'dumpxml', '--', options.domain]);
  const state = (await virsh([...connect, 'domstate', '--', options.domain])).trim();
  if (!options.force && (state === 'running' || state === 'paused' || state === 'in shutdown')) {
    throw new ImgctlError(
      'CONFLICT',
      `domain '${printable(options.domain)}' is ${state}; its disks may change while they are read`,
      {
        hint: 'shut it down first (virsh shutdown), or pass --force to capture it anyway',
      },
    );
  }
  const shape = readDomainXml(xml);
  if (shape.disks.length === 0)
    throw new ImgctlError(
      'VALIDATION',
      `domain '${printable(options.domain)}' has no file-backed disk to capture`,
    );
  const copies: Array<{ rel: string; from: string }> = [];
  const bootFile = (path: string | undefined) => {
    if (!path) return undefined;
    const rel = `boot/${basename(path).replace(/[^A-Za-z0-9._+-]/g, '_')}`;
    copies.push({ rel, from: path });
    return rel;
  };
  const kernel = bootFile(shape.kernel);
  const initrd = bootFile(shape.initrd);
  const boot: CaptureShape['boot'] = {
    type: shape.type,
    arch: shape.arch,
    features: [...new Set(shape.features)],
    firmware: shape.firmware,
    ...(kernel
      ? {
          kernel,
          ...(initrd ? { initrd } : {}),
          ...(shape.cmdline ? { cmdline: shape.cmdline } : {}),
        }
      : { loader: shape.loader }),
  };
  return captureDisks(
    storeDir,
    name,
    shape.disks.map((d, i) => ({
      id: d.target,
      file: d.file,
      use: i === 0 ? 'system' : 'data',
      target: d.target,
    })),
    {
      label: name,
      description: `Captured from the libvirt domain ${options.domain}.`,
      boot,
      devices: {
        vcpus: shape.vcpus,
        memory: shape.memory,
        ...(shape.nics.length > 0 ? { nics: shape.nics } : {}),
        graphics: shape.graphics,
        console: 'serial',
      },
      os: { family: 'linux', arch: shape.arch },
      copies,
      notReplicated: shape.notReplicated,
    },
  );
}
