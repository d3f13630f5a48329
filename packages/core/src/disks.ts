import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type BlobInfo,
  blobPath,
  type ProgressOptions,
  type StagedBlob,
  stageBlobFromFile,
  stageBlobFromStream,
  verifyBlob,
} from './blobs.ts';
import { parseYaml, writeFileAtomic } from './document.ts';
import { invalid } from './edit.ts';
import { ImgctlError } from './errors.ts';
import { loadImage } from './images.ts';
import { withStoreLock } from './lock.ts';
import { assertName, printable } from './names.ts';
import { type QemuImgInfo, qemuImgInfo } from './qemu-img.ts';
import { formatSize, parseSize } from './sizes.ts';
import { exists, listNames, storePaths } from './store.ts';
import type { Disk, DiskUse, ImageDoc, ImageRecordDoc } from './types.ts';
import { validateDocument } from './validate.ts';
import { editYamlText, type YamlEdit } from './yaml-edit.ts';

export interface AddDiskRequest {
  image: string;
  id: string;
  use: DiskUse;
  /** a disk image file (or block device) whose content becomes a blob of the store */
  file?: string;
  /** content stored elsewhere: downloaded once to learn its sha256, format and size */
  url?: string;
  /** with `url`: keep the downloaded content as a blob of the store too */
  keep?: boolean;
  /** scratch disks: the size of the empty disk */
  size?: string;
  /** only without content (scratch); with content it must match what qemu-img detects */
  format?: string;
}

export interface AddDiskResult {
  image: string;
  disk: Disk;
  /** the image's revision after the change (unchanged when nothing changed) */
  revision: number;
  /** false when the disk was already exactly this */
  changed: boolean;
  blob?: BlobInfo;
}

const FORMATS: ReadonlyArray<Disk['format']> = ['raw', 'qcow2', 'vmdk', 'vdi', 'vhdx'];
/** vmdk variants whose data is inside the file itself (the others name extent files anywhere) */
const SELF_CONTAINED_VMDK = new Set(['monolithicSparse', 'streamOptimized']);
/** the order of a disk's keys when imgctl writes a new one */
const DISK_KEYS = ['id', 'use', 'format', 'size', 'sha256', 'blob', 'url'] as const;

/**
 * Adds or replaces the disk `id` of an image: the content becomes a blob (or, for `url`, is
 * hashed and checked), format and virtual size come from qemu-img, the disk entry of image.yaml
 * is written (comments kept) and the revision bumped. Everything runs under the store lock; the
 * blob is complete before image.yaml names it, and image.yaml is replaced atomically, so a kill
 * at any point leaves the store as it was or complete (at worst an orphan blob `verify --gc`
 * removes).
 */
export async function addDisk(
  storeDir: string,
  request: AddDiskRequest,
  options: ProgressOptions = {},
): Promise<AddDiskResult> {
  checkRequest(request);
  const { image, id } = request;
  return withStoreLock(storeDir, async () => {
    const imageFile = storePaths.imageFile(storeDir, image);
    const display = storePaths.rel.imageFile(image);
    await loadImage(storeDir, image); // NOT_FOUND / VALIDATION before any copying
    let staged: StagedBlob | undefined;
    let content: Pick<Disk, 'format' | 'size' | 'sha256' | 'blob' | 'url'>;
    let blob: BlobInfo | undefined;
    try {
      if (request.size === undefined) {
        // A local file is checked before the copy and always kept as a blob; a download is
        // kept only with `keep`, else the descriptor names its URL.
        if (request.file !== undefined) {
          checkInfo(await qemuImgInfo(request.file, options), request);
          staged = await stageBlobFromFile(storeDir, request.file, options);
        } else {
          staged = await download(storeDir, request.url!, options);
        }
        const info = checkInfo(await qemuImgInfo(staged.path, options), request);
        content = {
          format: info.format as Disk['format'],
          size: formatSize(info.virtualSize),
          sha256: staged.sha256,
          blob: request.file !== undefined || request.keep ? true : undefined,
          url: request.url,
        };
      } else {
        content = {
          format: (request.format as Disk['format'] | undefined) ?? 'raw',
          size: formatSize(parseSize(request.size!)),
          sha256: undefined,
          blob: undefined,
          url: undefined,
        };
      }

      // Re-read under the lock: the descriptor as it is now is what gets edited.
      const text = await readFile(imageFile, 'utf8');
      const current = parseYaml(display, text).value as ImageDoc;
      const index = current.disks.findIndex((d) => d.id === id);
      const existing = index >= 0 ? current.disks[index] : undefined;
      if (request.size !== undefined && request.format === undefined && existing)
        content.format = existing.format;
      const disk = { id, use: request.use, ...content } as Disk;
      const differs = (key: (typeof DISK_KEYS)[number]) =>
        key === 'size'
          ? parseSize(existing!.size) !== parseSize(disk.size)
          : String(existing![key] ?? '') !== String(disk[key] ?? '');
      const unchanged = existing !== undefined && !DISK_KEYS.some(differs);

      const cleanDisk = withoutUndefined(disk);
      const edits: YamlEdit[] = [];
      if (!unchanged) {
        await checkRecords(storeDir, image, disk);
        edits.push({ path: ['revision'], value: current.revision + 1 });
        if (existing) {
          for (const key of DISK_KEYS.slice(1))
            if (differs(key)) edits.push({ path: ['disks', index, key], value: disk[key] });
        } else {
          edits.push({ path: ['disks', current.disks.length], value: cleanDisk });
        }
      }
      const after = editYamlText(text, edits);
      const problems = validateDocument('Image', parseYaml(display, after), {
        expectedName: image,
      });
      if (problems.length > 0) throw invalid(display, problems);

      // The blob first, the descriptor naming it last.
      if (staged && (request.file !== undefined || request.keep)) {
        blob = await staged.commit();
        staged = undefined;
      }
      if (unchanged)
        return { image, disk: cleanDisk, revision: current.revision, changed: false, blob };
      const revision = current.revision + 1;
      await writeFileAtomic(imageFile, after);
      return { image, disk: cleanDisk, revision, changed: true, blob };
    } finally {
      await staged?.discard();
    }
  });
}

export interface DiskCheck {
  id: string;
  sha256?: string;
  /** false: missing, or the content does not hash to sha256 */
  ok: boolean;
  /** false when there is nothing in the store to check (scratch disks, url-only content) */
  checked: boolean;
  problem?: string;
}

/** Rehashes the blob of every disk of an image that has one. */
export async function verifyDisks(
  storeDir: string,
  image: string,
  options: ProgressOptions & { onDisk?: (id: string) => void } = {},
): Promise<DiskCheck[]> {
  const doc = await loadImage(storeDir, image);
  const results: DiskCheck[] = [];
  for (const disk of doc.disks) {
    if (!disk.blob || !disk.sha256) {
      const problem =
        disk.use === 'scratch'
          ? undefined
          : disk.url
            ? 'stored elsewhere (url); not checked'
            : 'no content yet';
      results.push({ id: disk.id, sha256: disk.sha256, ok: true, checked: false, problem });
      continue;
    }
    options.onDisk?.(disk.id);
    const present = await exists(blobPath(storeDir, disk.sha256));
    const ok = present && (await verifyBlob(storeDir, disk.sha256, options));
    results.push({
      id: disk.id,
      sha256: disk.sha256,
      ok,
      checked: true,
      problem: ok
        ? undefined
        : present
          ? 'the blob does not match its sha256 (corrupted)'
          : 'the blob is missing from .blobs/',
    });
  }
  return results;
}

function checkRequest(request: AddDiskRequest): void {
  assertName('image', request.image);
  assertName('disk', request.id);
  if (!['system', 'data', 'scratch'].includes(request.use)) {
    throw new ImgctlError('USAGE', `invalid disk use '${printable(String(request.use))}'`, {
      hint: 'use is one of system, data, scratch',
    });
  }
  const sources = [request.file, request.url, request.size].filter((s) => s !== undefined);
  if (sources.length !== 1) {
    throw new ImgctlError('USAGE', 'give exactly one of FILE, --url URL or --size SIZE', {
      hint: 'system and data disks take a FILE or --url; scratch disks take --size',
    });
  }
  if ((request.use === 'scratch') !== (request.size !== undefined)) {
    throw new ImgctlError(
      'USAGE',
      request.use === 'scratch'
        ? 'a scratch disk is created empty: give --size, not content'
        : `a ${request.use} disk needs content: give a FILE or --url, not --size`,
    );
  }
  if (request.format !== undefined && !FORMATS.includes(request.format as Disk['format'])) {
    throw new ImgctlError('USAGE', `unsupported disk format '${printable(request.format)}'`, {
      hint: `formats: ${FORMATS.join(', ')}`,
    });
  }
  if (request.keep && request.url === undefined)
    throw new ImgctlError('USAGE', '--keep only goes with --url');
  if (request.url !== undefined && !/^(https?|file):\/\//.test(request.url)) {
    throw new ImgctlError('USAGE', `invalid URL '${printable(request.url)}'`, {
      hint: 'give an http://, https:// or file:// URL',
    });
  }
}

/** Refuses content an image may not carry: unknown formats, and anything pointing at other host files. */
function checkInfo(info: QemuImgInfo, request: AddDiskRequest): QemuImgInfo {
  const what = request.file ?? request.url ?? 'the content';
  const refuse = (message: string, hint?: string) =>
    new ImgctlError('VALIDATION', `${printable(what)}: ${message}`, { hint });
  if (info.backingFile !== undefined) {
    throw refuse(
      `${info.format} image with a backing file (${printable(info.backingFile)}); a backing path can point anywhere on the host`,
      `flatten it first: qemu-img convert -O ${info.format} FILE FLAT.${info.format}`,
    );
  }
  if (info.dataFile !== undefined)
    throw refuse(`${info.format} image with an external data file (${printable(info.dataFile)})`);
  if (info.format === 'vmdk' && !SELF_CONTAINED_VMDK.has(info.vmdkCreateType ?? '')) {
    throw refuse(
      `vmdk of type ${info.vmdkCreateType ?? 'unknown'} names extent files outside itself`,
      'convert it: qemu-img convert -O qcow2 FILE DISK.qcow2',
    );
  }
  if (!FORMATS.includes(info.format as Disk['format'])) {
    throw refuse(`unsupported disk format '${info.format}'`, `supported: ${FORMATS.join(', ')}`);
  }
  if (info.corrupt) throw refuse('qemu-img reports the image as corrupt');
  if (info.dirty) {
    throw refuse(
      'the image was not closed cleanly (dirty flag)',
      'repair it: qemu-img check -r all FILE',
    );
  }
  if (request.format !== undefined && request.format !== info.format) {
    throw refuse(
      `the content is ${info.format}, not ${request.format}`,
      'drop --format; it is read from the content',
    );
  }
  return info;
}

/** Streams a URL into a staged blob; only 2xx responses count. */
async function download(
  storeDir: string,
  url: string,
  options: ProgressOptions,
): Promise<StagedBlob> {
  if (url.startsWith('file://')) {
    return stageBlobFromStream(storeDir, createReadStream(fileURLToPath(url)), options);
  }
  let response: Response;
  try {
    response = await fetch(url, { signal: options.signal, redirect: 'follow' });
  } catch (cause) {
    options.signal?.throwIfAborted();
    throw new ImgctlError(
      'FAILED',
      `cannot fetch ${printable(url)}: ${String((cause as Error).cause ?? cause)}`,
      {
        cause,
      },
    );
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new ImgctlError(
      response.status === 404 ? 'NOT_FOUND' : 'FAILED',
      `cannot fetch ${printable(url)}: HTTP ${response.status}`,
    );
  }
  const length = Number(response.headers.get('content-length') ?? Number.NaN);
  return stageBlobFromStream(storeDir, response.body as unknown as AsyncIterable<Uint8Array>, {
    ...options,
    expectedSize: Number.isSafeInteger(length) ? length : undefined,
  });
}

/** A record that provisions this disk smaller than its new size would no longer be valid. */
async function checkRecords(storeDir: string, image: string, disk: Disk): Promise<void> {
  const newSize = parseSize(disk.size);
  const tooSmall: string[] = [];
  for (const record of await listNames(storePaths.recordsDir(storeDir, image), 'yamlFiles')) {
    const file = storePaths.recordFile(storeDir, image, record);
    const doc = parseYaml(file, await readFile(file, 'utf8')).value as ImageRecordDoc | undefined;
    const size = doc?.provision?.disks?.[disk.id]?.size;
    if (size === undefined) continue;
    try {
      if (parseSize(size) < newSize) tooSmall.push(`${record} (${String(size)})`);
    } catch {
      // an invalid size is `image validate`'s to report
    }
  }
  if (tooSmall.length > 0) {
    throw new ImgctlError(
      'VALIDATION',
      `disk '${disk.id}' would be ${String(disk.size)}, larger than records provision it: ${tooSmall.join(', ')}`,
      {
        hint: `raise those first: imgctl record set ${image} RECORD provision.disks.${disk.id}.size=${String(disk.size)}`,
      },
    );
  }
}

function withoutUndefined(disk: Disk): Disk {
  return Object.fromEntries(
    DISK_KEYS.filter((k) => disk[k] !== undefined).map((k) => [k, disk[k]]),
  ) as unknown as Disk;
}

/** Store-relative path of a blob, for messages. */
export function blobDisplayPath(sha256: string): string {
  return join('.blobs', 'sha256', sha256.slice(0, 2), sha256);
}
