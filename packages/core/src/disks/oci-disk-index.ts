/**
 * The disk index of a segmented disk (docs/distribution.md, "Segmented disks"): a disk pushed as
 * several layers has no blob named by its sha256, so an agent asking a registry for that blob
 * finds nothing. `imgctl push` therefore also tags, in the same repository, a small manifest
 * `disk-<sha256>` (artifactType `application/vnd.imgctl.disk.v1`, the empty config) whose layers
 * are the segments in order and whose annotations name the whole disk's sha256 and size; the
 * agent reads it and pulls the segments one after another, checking each and the whole.
 */
import { ImgctlError } from '../util/errors.ts';
import { digestOf, MAX_MANIFEST, OCI_MANIFEST } from '../registry/registry.ts';
import { ANNOTATION, diskMediaType, EMPTY_CONFIG } from './oci-artifact.ts';

export const DISK_INDEX_ARTIFACT = 'application/vnd.imgctl.disk.v1';
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const HEX = /^[0-9a-f]{64}$/;
const MAX_SEGMENTS = 10_000;
const SHA256 = 'dev.imgctl.disk.sha256';
const SIZE = 'dev.imgctl.disk.size';

/** One segment of a disk: its layer digest and size, in the disk's order. */
export interface DiskPart {
  digest: string;
  size: number;
}

/** The tag a segmented disk's index is pushed under: `disk-<sha256>`. */
export function diskIndexTag(hex: string): string {
  return `disk-${hex}`;
}

/** The index manifest of a disk pushed as `segments` (more than one). */
export function buildDiskIndex(disk: {
  sha256: string;
  size: number;
  format: string;
  segments: DiskPart[];
}): { mediaType: string; bytes: Buffer; digest: string } {
  let offset = 0;
  const layers = disk.segments.map((segment) => {
    const layer = {
      mediaType: diskMediaType(disk.format, true),
      digest: segment.digest,
      size: segment.size,
      annotations: { [ANNOTATION.diskOffset]: String(offset) },
    };
    offset += segment.size;
    return layer;
  });
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: DISK_INDEX_ARTIFACT,
    config: {
      mediaType: EMPTY_CONFIG.mediaType,
      digest: EMPTY_CONFIG.digest,
      size: EMPTY_CONFIG.bytes.length,
    },
    layers,
    annotations: { [SHA256]: disk.sha256, [SIZE]: String(disk.size) },
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return { mediaType: OCI_MANIFEST, bytes, digest: digestOf(bytes) };
}

/**
 * The segments a disk index lists, checked: it is the index of the disk `hex`, its segments are
 * sha256 digests whose sizes add up to the disk's size. Anything else is INTEGRITY.
 */
export function parseDiskIndex(bytes: Buffer, hex: string, where: string): DiskPart[] {
  const refuse = (why: string) =>
    new ImgctlError('INTEGRITY', `${where}: the index of disk sha256:${hex.slice(0, 12)} ${why}`);
  if (!HEX.test(hex)) throw new ImgctlError('USAGE', `not a sha256: '${hex.slice(0, 80)}'`);
  if (bytes.length > MAX_MANIFEST) throw refuse(`is ${bytes.length} bytes, over 4 MiB`);
  let doc: {
    mediaType?: unknown;
    artifactType?: unknown;
    layers?: unknown;
    annotations?: Record<string, unknown>;
  };
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch {
    throw refuse('is not JSON');
  }
  if (doc.mediaType !== OCI_MANIFEST || doc.artifactType !== DISK_INDEX_ARTIFACT)
    throw refuse(`is not a disk index (${DISK_INDEX_ARTIFACT})`);
  if (doc.annotations?.[SHA256] !== hex) throw refuse('names another disk');
  const size = Number(doc.annotations?.[SIZE]);
  if (!Number.isSafeInteger(size) || size < 0) throw refuse('has no disk size');
  if (!Array.isArray(doc.layers) || doc.layers.length === 0 || doc.layers.length > MAX_SEGMENTS)
    throw refuse(`has ${Array.isArray(doc.layers) ? doc.layers.length : 'no'} segments`);
  const parts = (doc.layers as Array<{ digest?: unknown; size?: unknown }>).map((layer) => {
    if (typeof layer.digest !== 'string' || !DIGEST.test(layer.digest))
      throw refuse('lists a segment without a sha256 digest');
    if (!Number.isSafeInteger(layer.size) || (layer.size as number) <= 0)
      throw refuse(`lists segment ${layer.digest} without a size`);
    return { digest: layer.digest, size: layer.size as number };
  });
  const total = parts.reduce((sum, part) => sum + part.size, 0);
  if (total !== size) throw refuse(`has segments of ${total} bytes for a disk of ${size}`);
  return parts;
}
