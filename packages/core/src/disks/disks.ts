import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  assertUnchanged,
  type BlobInfo,
  blobPath,
  type ProgressOptions,
  type StagedBlob,
  stageBlobFromFile,
  stageBlobFromStream,
  stageBlobWith,
  verifyBlob,
} from './blobs.ts';
import { parseYaml } from '../yaml/document.ts';
import { invalid } from '../store/edit.ts';
import { ImgctlError } from '../util/errors.ts';
import { loadImage } from '../store/images.ts';
import { withStoreLock } from '../store/lock.ts';
import { type StoreFile, writeStoreFiles } from '../store/store-txn.ts';
import { assertName, printable } from '../util/names.ts';
import { processRunner } from '../util/process.ts';
import { type QemuImgInfo, qemuImgInfo } from './qemu-img.ts';
import { formatSize, parseSize } from '../util/sizes.ts';
import { exists, listNames, storePaths } from '../store/store.ts';
import type { Disk, DiskUse, ImageDoc, ImageRecordDoc } from '../store/types.ts';
import { validateDocument } from '../validate/document.ts';
import { editYamlText, type YamlEdit } from '../yaml/yaml-edit.ts';

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
  /** store a mostly-empty sparse raw FILE as it is, not converted to qcow2 (see SPARSE_RULE) */
  keepRaw?: boolean;
}

export interface AddDiskResult {
  image: string;
  disk: Disk;
  /** the image's revision after the change (unchanged when nothing changed) */
  revision: number;
  /** false when the disk was already exactly this */
  changed: boolean;
  blob?: BlobInfo;
  /** set when the content was stored in another format than given: what and why */
  converted?: { from: string; to: string; reason: string };
}

export interface DiskProgressOptions extends ProgressOptions {
  /** the content is about to be converted (see SPARSE_RULE), and why; progress then counts the converted blob being hashed */
  onConvert?: (reason: string) => void;
}

const FORMATS: ReadonlyArray<Disk['format']> = ['raw', 'qcow2', 'vmdk', 'vdi', 'vhdx'];
/** vmdk variants whose data is inside the file itself (the others name extent files anywhere) */
const SELF_CONTAINED_VMDK = new Set(['monolithicSparse', 'streamOptimized']);
/** the order of a disk's keys when imgctl writes a new one */
const DISK_KEYS = ['id', 'use', 'format', 'size', 'sha256', 'blob', 'url'] as const;
const GiB = 1024 * 1024 * 1024;
const runner = processRunner();
/**
 * A raw file is stored as qcow2 when it has at least this many bytes of holes and less than
 * half of it is allocated: hashing the holes of a raw blob costs CPU in proportion to its
 * virtual size (about 1 s per GB), a qcow2 holds only the data. Small disks (the tiny
 * appliance's 64 MiB) always stay raw, so they can be streamed onto a target disk as they are.
 */
export const SPARSE_RULE = { minHoleBytes: GiB, maxAllocatedFraction: 0.5 } as const;

/**
 * Adds or replaces the disk `id` of an image: the content becomes a blob (or, for `url`, is
 * hashed and checked), format and virtual size come from qemu-img, the disk entry of image.yaml
 * is written (comments kept) and the revision bumped. A raw FILE that is mostly holes (see
 * SPARSE_RULE) is stored as qcow2 unless `keepRaw`; the result says so. Everything runs under
 * the store lock; the blob is complete before image.yaml names it, and image.yaml is replaced
 * atomically, so a kill at any point leaves the store as it was or complete (at worst an orphan
 * blob `verify --gc` removes).
 */
export async function addDisk(
  storeDir: string,
  request: AddDiskRequest,
  options: DiskProgressOptions = {},
): Promise<AddDiskResult> {
  const [result] = await addDisks(storeDir, request.image, [request], options);
  return result!;
}

export interface AddDisksOptions extends DiskProgressOptions {
  /** called once per request before its content is read */
  onDisk?: (request: AddDiskRequest) => void;
  /**
   * More files to write together with image.yaml (e.g. the record's `build:`), given the
   * outcome; they are written in one transaction with it (see store-txn.ts).
   */
  alsoWrite?: (outcome: {
    revision: number;
    disks: AddDiskResult[];
  }) => Promise<StoreFile[]> | StoreFile[];
}

/**
 * addDisk for several disks of one image at once, as one change: every content is staged and
 * checked first, the blobs are then put in place (content-addressed, so an extra one is
 * harmless and `verify --gc` removes it), and last image.yaml (revision bumped once) and the
 * `alsoWrite` files are written in one transaction under the store lock. Killed at any point,
 * the descriptor names all the new disks or none of them.
 */
export async function addDisks(
  storeDir: string,
  image: string,
  requests: AddDiskRequest[],
  options: AddDisksOptions = {},
): Promise<AddDiskResult[]> {
  for (const request of requests) {
    if (request.image !== image) throw new Error('addDisks: every request names the same image');
    checkRequest(request);
  }
  assertName('image', image);
  const ids = new Set(requests.map((r) => r.id));
  if (ids.size !== requests.length)
    throw new ImgctlError('USAGE', 'the same disk id is given twice');
  return withStoreLock(storeDir, async () => {
    await loadImage(storeDir, image); // NOT_FOUND / VALIDATION before any copying
    const prepared: PreparedDisk[] = [];
    try {
      for (const request of requests) {
        options.onDisk?.(request);
        prepared.push(await prepareDisk(storeDir, request, options));
      }
      const change = await describeDisks(storeDir, image, prepared);
      const results: AddDiskResult[] = prepared.map((p, i) => ({
        image,
        disk: change.disks[i]!.disk,
        revision: change.revision,
        changed: change.disks[i]!.changed,
        converted: p.converted,
      }));
      const extra =
        (await options.alsoWrite?.({ revision: change.revision, disks: results })) ?? [];
      // The blobs first, the descriptor naming them last.
      for (const [i, p] of prepared.entries()) {
        if (p.staged && p.content.blob) {
          results[i]!.blob = await p.staged.commit();
          p.staged = undefined;
        }
      }
      await writeStoreFiles(storeDir, [
        ...(change.changed ? [{ path: change.file, content: change.after }] : []),
        ...extra,
      ]);
      return results;
    } finally {
      await Promise.all(prepared.map((p) => p.staged?.discard()));
    }
  });
}

/** One disk's content staged under .blobs/tmp and described, before anything names it. */
interface PreparedDisk {
  request: AddDiskRequest;
  content: Pick<Disk, 'format' | 'size' | 'sha256' | 'blob' | 'url'>;
  /** becomes a blob of the store when `content.blob` says so */
  staged?: StagedBlob;
  converted?: AddDiskResult['converted'];
}

async function prepareDisk(
  storeDir: string,
  request: AddDiskRequest,
  options: DiskProgressOptions,
): Promise<PreparedDisk> {
  if (request.size !== undefined) {
    return {
      request,
      content: {
        format: (request.format as Disk['format'] | undefined) ?? 'raw',
        size: formatSize(parseSize(request.size)),
        sha256: undefined,
        blob: undefined,
        url: undefined,
      },
    };
  }
  // A local file is checked before the copy and always kept as a blob; a download is kept
  // only with `keep`, else the descriptor names its URL.
  let staged: StagedBlob;
  let converted: AddDiskResult['converted'];
  if (request.file !== undefined) {
    const given = checkInfo(await qemuImgInfo(request.file, options), request);
    const reason = request.keepRaw ? undefined : await sparseReason(request.file, given);
    if (reason !== undefined) {
      options.onConvert?.(reason);
      staged = await stageQcow2(storeDir, request.file, options);
      converted = { from: 'raw', to: 'qcow2', reason };
    } else {
      staged = await stageBlobFromFile(storeDir, request.file, options);
    }
  } else {
    staged = await download(storeDir, request.url!, options);
  }
  try {
    const info = checkInfo(await qemuImgInfo(staged.path, options), request, converted?.to);
    return {
      request,
      staged,
      converted,
      content: {
        format: info.format as Disk['format'],
        size: formatSize(info.virtualSize),
        sha256: staged.sha256,
        blob: request.file !== undefined || request.keep ? true : undefined,
        url: request.url,
      },
    };
  } catch (error) {
    await staged.discard();
    throw error;
  }
}

/** Why a raw file should be stored as qcow2 (SPARSE_RULE), or undefined to keep it raw. */
async function sparseReason(file: string, info: QemuImgInfo): Promise<string | undefined> {
  if (info.format !== 'raw') return undefined;
  const st = await stat(file);
  // qcow2 sizes are whole sectors: another size would not survive the conversion exactly
  if (!st.isFile() || st.size % 512 !== 0) return undefined;
  const allocated = Math.min(st.blocks * 512, st.size);
  const holes = st.size - allocated;
  if (holes < SPARSE_RULE.minHoleBytes || allocated >= st.size * SPARSE_RULE.maxAllocatedFraction)
    return undefined;
  return `a sparse raw file of ${formatSize(st.size)} holding ${formatSize(allocated)} of data; a qcow2 blob holds only the data (--keep-raw stores it raw)`;
}

/**
 * `qemu-img convert -O qcow2` of a raw file into a staged blob: the holes are skipped, not read
 * or hashed. The source must not change meanwhile (compared as in the plain copy).
 */
async function stageQcow2(
  storeDir: string,
  file: string,
  options: ProgressOptions,
): Promise<StagedBlob> {
  const source = resolve(file);
  const before = await stat(source);
  const staged = await stageBlobWith(
    storeDir,
    async (tmp) => {
      try {
        await runner.run(
          'qemu-img',
          ['convert', '-q', '-f', 'raw', '-O', 'qcow2', '--', source, tmp],
          {
            signal: options.signal,
            env: { LC_ALL: 'C' },
            extendEnv: true,
          },
        );
      } catch (error) {
        options.signal?.throwIfAborted();
        const e = error as { stderr?: string; shortMessage?: string };
        throw new ImgctlError(
          'FAILED',
          `qemu-img convert of ${printable(file)} failed: ${String(e.stderr || e.shortMessage).split('\n')[0]}`,
          { hint: 'add it as it is with --keep-raw' },
        );
      }
    },
    options,
  );
  try {
    await assertUnchanged(source, before);
  } catch (error) {
    await staged.discard();
    throw error;
  }
  return staged;
}

interface DescriptorChange {
  file: string;
  after: string;
  revision: number;
  changed: boolean;
  disks: Array<{ disk: Disk; changed: boolean }>;
}

/** image.yaml with every prepared disk added or replaced, validated; the revision bumped once. */
async function describeDisks(
  storeDir: string,
  image: string,
  prepared: PreparedDisk[],
): Promise<DescriptorChange> {
  const file = storePaths.imageFile(storeDir, image);
  const display = storePaths.rel.imageFile(image);
  // Re-read under the lock: the descriptor as it is now is what gets edited.
  const text = await readFile(file, 'utf8');
  const current = parseYaml(display, text).value as ImageDoc;
  const edits: YamlEdit[] = [];
  const disks: DescriptorChange['disks'] = [];
  let appended = 0;
  for (const { request, content } of prepared) {
    const index = current.disks.findIndex((d) => d.id === request.id);
    const existing = index >= 0 ? current.disks[index] : undefined;
    if (request.size !== undefined && request.format === undefined && existing)
      content.format = existing.format;
    const disk = { id: request.id, use: request.use, ...content } as Disk;
    const differs = (key: (typeof DISK_KEYS)[number]) =>
      key === 'size'
        ? parseSize(existing!.size) !== parseSize(disk.size)
        : String(existing![key] ?? '') !== String(disk[key] ?? '');
    const unchanged = existing !== undefined && !DISK_KEYS.some(differs);
    const cleanDisk = withoutUndefined(disk);
    disks.push({ disk: cleanDisk, changed: !unchanged });
    if (unchanged) continue;
    await checkRecords(storeDir, image, disk);
    if (existing) {
      for (const key of DISK_KEYS.slice(1))
        if (differs(key)) edits.push({ path: ['disks', index, key], value: disk[key] });
    } else {
      edits.push({ path: ['disks', current.disks.length + appended++], value: cleanDisk });
    }
  }
  const changed = edits.length > 0;
  const revision = changed ? current.revision + 1 : current.revision;
  if (changed) edits.unshift({ path: ['revision'], value: revision });
  const after = editYamlText(text, edits);
  const problems = validateDocument('Image', parseYaml(display, after), { expectedName: image });
  if (problems.length > 0) throw invalid(display, problems);
  return { file, after, revision, changed, disks };
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
  if (request.size !== undefined && parseSize(request.size) === 0)
    throw new ImgctlError('USAGE', '--size 0: a scratch disk needs room', {
      hint: 'e.g. --size 10GiB',
    });
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
function checkInfo(info: QemuImgInfo, request: AddDiskRequest, convertedTo?: string): QemuImgInfo {
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
  if (request.format !== undefined && request.format !== info.format && convertedTo === undefined) {
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
