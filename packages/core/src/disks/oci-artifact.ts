/**
 * The OCI artifact of an image or a release (`imgctl push`, `imgctl import oci://…`;
 * docs/distribution.md, "What is pushed"): an OCI image manifest of artifactType
 * `application/vnd.imgctl.image.v1` whose config is a JSON document holding the descriptor, the
 * records and every file of the image directory, and whose layers are the disks — one layer per
 * disk content, its digest the disk's sha256, or several layers (segments) for a disk larger than
 * the segment size, the whole-disk sha256 kept in the config. Built here from what push.ts read;
 * parsed and checked here for import-oci.ts before anything is fetched or written.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { ImgctlError } from '../util/errors.ts';
import { isValidName, printable } from '../util/names.ts';
import { parseYaml } from '../yaml/document.ts';
import type {
  BlobSource,
  OciDescriptor,
  OciReference,
  Registry,
  RegistryOptions,
} from '../registry/types.ts';
import type { Disk } from '../store/types.ts';
import { digestOf, MAX_MANIFEST, OCI_MANIFEST } from '../registry/registry.ts';
import { isSafeRelPath, isSha256, PACK_LIMITS } from './pack.ts';

export { OCI_MANIFEST };
export const IMAGE_ARTIFACT = 'application/vnd.imgctl.image.v1';
export const IMAGE_CONFIG = 'application/vnd.imgctl.image.config.v1+json';
export const SIGNATURE_ARTIFACT = 'application/vnd.imgctl.signature.v1';
export const SIGNED_PLAN = 'application/vnd.imgctl.signed-plan.v1+json';
/** the OCI "empty" config of an artifact with nothing to configure: `{}` */
export const EMPTY_CONFIG = {
  mediaType: 'application/vnd.oci.empty.v1+json',
  bytes: Buffer.from('{}'),
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
};
export const CONFIG_FORMAT = 'imgctl-image/1';
/** Quay refuses layers over 20 GiB by default; 16 GiB leaves room */
export const DEFAULT_SEGMENT_SIZE = 16 * 1024 ** 3;
export const MIN_SEGMENT_SIZE = 1024 * 1024;
/** a config is a blob, not a manifest; still read into memory whole, so bounded */
export const MAX_CONFIG = 16 * 1024 * 1024;
const MAX_LAYERS = 10_000;
const FORMATS: ReadonlySet<string> = new Set(['raw', 'qcow2', 'vmdk', 'vdi', 'vhdx']);
const USES: ReadonlySet<string> = new Set(['system', 'data', 'scratch']);
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** How push and import reach a registry: registry/registry.ts's openRegistry, or a fake. */
export type OpenRegistry = (ref: OciReference, options: RegistryOptions) => Registry;

export const ANNOTATION = {
  title: 'org.opencontainers.image.title',
  created: 'org.opencontainers.image.created',
  image: 'dev.imgctl.image.name',
  revision: 'dev.imgctl.image.revision',
  release: 'dev.imgctl.image.release',
  diskId: 'dev.imgctl.disk.id',
  diskFormat: 'dev.imgctl.disk.format',
  diskOffset: 'dev.imgctl.disk.offset',
  keyId: 'dev.imgctl.signature.key-id',
  expires: 'dev.imgctl.signature.expires',
} as const;

/** The media type of a layer holding a whole disk of `format`, or one segment of it. */
export function diskMediaType(format: string, segment: boolean): string {
  return `application/vnd.imgctl.disk.v1.${format}${segment ? '.segment' : ''}`;
}

export interface ArtifactFile {
  /** relative to the image directory, forward slashes */
  path: string;
  size: number;
  sha256: string;
  /** 0o644 or 0o755 */
  mode: number;
  encoding: 'utf-8' | 'base64';
  content: string;
}

export interface ArtifactDisk {
  id: string;
  use: Disk['use'];
  format: Disk['format'];
  /** bytes of content (the blob), not the descriptor's virtual size */
  size: number;
  /** the whole disk's sha256: what the store and the agent's cache name it by */
  sha256: string;
  /** the digests of its layers, in order: one (`sha256:<sha256>`), or its segments */
  layers: string[];
}

export interface ArtifactRelease {
  /** NAME@REV */
  ref: string;
  created_at: string;
  created_by: string;
  parent?: string;
  deprecated?: { at: string; reason?: string };
}

/** The config blob: `application/vnd.imgctl.image.config.v1+json`. */
export interface ImageConfig {
  format: typeof CONFIG_FORMAT;
  image: string;
  revision: number;
  release?: ArtifactRelease;
  /** image.yaml as JSON, for readers without YAML (import installs `files`) */
  descriptor: unknown;
  /** records/NAME.yaml as JSON, by name */
  records: Record<string, unknown>;
  /** directories of the image directory, sorted (empty ones survive) */
  dirs: string[];
  files: ArtifactFile[];
  disks: ArtifactDisk[];
}

/** A disk to push: its content in the store and how it is cut (one segment unless large). */
export interface DiskInput {
  id: string;
  use: Disk['use'];
  format: Disk['format'];
  size: number;
  sha256: string;
  /** `[{digest: 'sha256:' + sha256, size}]`, or the segments' digests and sizes in order */
  segments: Array<{ digest: string; size: number }>;
}

export interface ArtifactInput {
  image: string;
  revision: number;
  release?: ArtifactRelease;
  dirs: string[];
  files: Array<{ path: string; mode: number; bytes: Buffer }>;
  disks: DiskInput[];
  /** RFC 3339: the release's creation, or SOURCE_DATE_EPOCH; none makes no `created` */
  created?: string;
}

/** A layer of the manifest and where its bytes are: the disk blob `sha256` from `offset`. */
export interface ArtifactLayer extends OciDescriptor {
  annotations: Record<string, string>;
  sha256: string;
  offset: number;
}

export interface BuiltArtifact {
  config: { mediaType: string; bytes: Buffer; digest: string };
  manifest: { mediaType: string; bytes: Buffer; digest: string };
  /** distinct layers, in the manifest's order */
  layers: ArtifactLayer[];
}

export { digestOf };

/** A blob held in memory (a config, a signature), opened again at any offset to resume. */
export function bufferSource(bytes: Buffer, digest = digestOf(bytes)): BlobSource {
  return { digest, size: bytes.length, open: (offset) => Readable.from([bytes.subarray(offset)]) };
}

/** A file's bytes as the config carries them: text when it is UTF-8, else base64. */
function encodeFile(bytes: Buffer): Pick<ArtifactFile, 'encoding' | 'content'> {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes)
    ? { encoding: 'utf-8', content: text }
    : { encoding: 'base64', content: bytes.toString('base64') };
}

/**
 * The config, layers and manifest of an image. Deterministic: the same input gives the same
 * bytes (files sorted, disks in the descriptor's order, no time but `created`). VALIDATION when
 * the config or the manifest would be too large for a registry.
 */
export function buildImageArtifact(input: ArtifactInput): BuiltArtifact {
  const files = [...input.files]
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .map((f) => ({
      path: f.path,
      size: f.bytes.length,
      sha256: createHash('sha256').update(f.bytes).digest('hex'),
      mode: f.mode,
      ...encodeFile(f.bytes),
    }));
  const descriptor = yamlValue(input.files, 'image.yaml');
  const records: Record<string, unknown> = {};
  for (const f of files) {
    const match = /^records\/([^/]+)\.yaml$/.exec(f.path);
    if (match) records[match[1]!] = yamlValue(input.files, f.path);
  }
  const config: ImageConfig = {
    format: CONFIG_FORMAT,
    image: input.image,
    revision: input.revision,
    ...(input.release ? { release: input.release } : {}),
    descriptor,
    records,
    dirs: [...input.dirs].sort(),
    files,
    disks: input.disks.map((d) => ({
      id: d.id,
      use: d.use,
      format: d.format,
      size: d.size,
      sha256: d.sha256,
      layers: d.segments.map((s) => s.digest),
    })),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  if (configBytes.length > MAX_CONFIG)
    throw new ImgctlError(
      'VALIDATION',
      `the config of ${input.image} (its files) is ${configBytes.length} bytes, over ${MAX_CONFIG}`,
      { hint: 'keep large files out of the image directory: make them disks' },
    );
  const layers: ArtifactLayer[] = [];
  const seen = new Set<string>();
  for (const disk of input.disks) {
    const segmented = disk.segments.length > 1;
    let offset = 0;
    for (const [i, segment] of disk.segments.entries()) {
      const at = offset;
      offset += segment.size;
      // the same content as a whole disk and as a segment (zeros) is two layers: two types
      const mediaType = diskMediaType(disk.format, segmented);
      if (seen.has(`${segment.digest} ${mediaType}`)) continue;
      seen.add(`${segment.digest} ${mediaType}`);
      const file = `${disk.id}.${disk.format}`;
      layers.push({
        mediaType,
        digest: segment.digest,
        size: segment.size,
        annotations: {
          [ANNOTATION.title]: segmented ? `${file}.${String(i + 1).padStart(3, '0')}` : file,
          [ANNOTATION.diskId]: disk.id,
          [ANNOTATION.diskFormat]: disk.format,
          ...(segmented ? { [ANNOTATION.diskOffset]: String(at) } : {}),
        },
        sha256: disk.sha256,
        offset: at,
      });
    }
  }
  const configDigest = digestOf(configBytes);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: IMAGE_ARTIFACT,
      config: { mediaType: IMAGE_CONFIG, digest: configDigest, size: configBytes.length },
      layers: layers.map(({ mediaType, digest, size, annotations }) => ({
        mediaType,
        digest,
        size,
        annotations,
      })),
      annotations: {
        ...(input.created ? { [ANNOTATION.created]: input.created } : {}),
        [ANNOTATION.title]: input.image,
        [ANNOTATION.image]: input.image,
        [ANNOTATION.revision]: String(input.revision),
        ...(input.release ? { [ANNOTATION.release]: input.release.ref } : {}),
      },
    }),
  );
  if (manifestBytes.length > MAX_MANIFEST)
    throw new ImgctlError(
      'VALIDATION',
      `the manifest of ${input.image} would be ${manifestBytes.length} bytes (${layers.length} layers), over the 4 MiB registries accept`,
      { hint: 'give a larger --segment-size: fewer segments, fewer layers' },
    );
  return {
    config: { mediaType: IMAGE_CONFIG, bytes: configBytes, digest: configDigest },
    manifest: { mediaType: OCI_MANIFEST, bytes: manifestBytes, digest: digestOf(manifestBytes) },
    layers,
  };
}

function yamlValue(files: ArtifactInput['files'], path: string): unknown {
  const file = files.find((f) => f.path === path);
  if (!file) throw new ImgctlError('VALIDATION', `the image has no ${path}`);
  const yaml = parseYaml(path, file.bytes.toString('utf8'));
  if (yaml.problems.length > 0)
    throw new ImgctlError('VALIDATION', `${path} of the image is not valid YAML`);
  return yaml.value;
}

/** A VALIDATION error refusing what a registry served. */
export function refused(message: string): ImgctlError {
  return new ImgctlError('VALIDATION', `refused the artifact: ${message}`, {
    hint: 'only images pushed by `imgctl push` are imported; nothing was changed',
  });
}

export interface ParsedManifest {
  config: OciDescriptor;
  layers: OciDescriptor[];
  annotations: Record<string, string>;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isSize = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;

function annotationsOf(value: unknown, what: string): Record<string, string> {
  if (value === undefined) return {};
  if (!isObject(value) || Object.values(value).some((v) => typeof v !== 'string'))
    throw refused(`${what}: annotations are not strings`);
  return value as Record<string, string>;
}

/**
 * Parses and checks a fetched manifest: an OCI image manifest of our artifactType, its config
 * of our media type and bounded size, every layer a disk media type with a well-formed digest
 * and size. VALIDATION otherwise, naming what is wrong.
 */
export function parseImageManifest(bytes: Buffer): ParsedManifest {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refused('the manifest is not JSON');
  }
  if (!isObject(value)) throw refused('the manifest is not a JSON object');
  if (value.schemaVersion !== 2) throw refused('the manifest is not schemaVersion 2');
  if (value.mediaType !== OCI_MANIFEST)
    throw refused(`the manifest's mediaType is ${printable(String(value.mediaType))}`);
  if (value.artifactType !== IMAGE_ARTIFACT)
    throw refused(
      `it is not an imgctl image (artifactType ${printable(String(value.artifactType))}, not ${IMAGE_ARTIFACT})`,
    );
  const config = descriptorOf(value.config, 'the config');
  if (config.mediaType !== IMAGE_CONFIG)
    throw refused(`the config's mediaType is ${printable(config.mediaType)}`);
  if (config.size === 0 || config.size > MAX_CONFIG)
    throw refused(`the config declares ${config.size} bytes (1 to ${MAX_CONFIG})`);
  if (!Array.isArray(value.layers)) throw refused('the manifest has no list of layers');
  if (value.layers.length > MAX_LAYERS) throw refused(`more than ${MAX_LAYERS} layers`);
  const layers = value.layers.map((l, i) => {
    const layer = descriptorOf(l, `layer ${i + 1}`);
    if (!/^application\/vnd\.imgctl\.disk\.v1\.[a-z0-9]+(\.segment)?$/.test(layer.mediaType))
      throw refused(`layer ${i + 1} has the mediaType ${printable(layer.mediaType)}, not a disk`);
    return layer;
  });
  return { config, layers, annotations: annotationsOf(value.annotations, 'the manifest') };
}

function descriptorOf(value: unknown, what: string): OciDescriptor {
  if (!isObject(value)) throw refused(`${what} is not a descriptor`);
  const { mediaType, digest, size } = value;
  if (typeof mediaType !== 'string') throw refused(`${what} has no mediaType`);
  if (typeof digest !== 'string' || !DIGEST.test(digest))
    throw refused(`${what}'s digest ${printable(String(digest))} is not sha256: and 64 hex`);
  if (!isSize(size)) throw refused(`${what}'s size is not a non-negative integer`);
  return {
    mediaType,
    digest,
    size,
    ...(value.annotations === undefined
      ? {}
      : { annotations: annotationsOf(value.annotations, what) }),
  };
}

/** The layers of a disk of a checked config, in order (by digest and the disk's media type). */
export function diskLayers(
  manifest: ParsedManifest,
  disk: Pick<ArtifactDisk, 'format' | 'layers'>,
): OciDescriptor[] {
  const type = diskMediaType(disk.format, disk.layers.length > 1);
  return disk.layers.map((digest) =>
    manifest.layers.find((l) => l.digest === digest && l.mediaType === type)!,
  );
}

/** A checked config: its files decoded (each one's size and sha256 verified). */
export interface ParsedConfig {
  config: ImageConfig;
  contents: Map<string, Buffer>;
  /** the distinct disk contents, as `imgctl pack` lists blobs */
  blobs: Array<{ sha256: string; size: number }>;
}

/**
 * Parses and checks a config against its manifest: every path safe (as `imgctl import` checks an
 * archive's), every size and hash well-formed, every file's content of its declared size and
 * sha256 (INTEGRITY otherwise), the descriptor and records the same as their files, every disk's
 * layers in the manifest, adding up to its size, a single layer named by the disk's sha256, and
 * every layer used. VALIDATION otherwise.
 */
export function parseImageConfig(bytes: Buffer, manifest: ParsedManifest): ParsedConfig {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refused('the config is not JSON');
  }
  if (!isObject(value)) throw refused('the config is not a JSON object');
  const bad = (what: string) => refused(`config: ${what}`);
  if (value.format !== CONFIG_FORMAT) throw bad(`format is not ${CONFIG_FORMAT}`);
  const { image, revision } = value;
  if (typeof image !== 'string' || !isValidName(image)) throw bad('image is not a valid name');
  if (!Number.isSafeInteger(revision) || (revision as number) < 1)
    throw bad('revision is not a positive integer');
  const named = manifest.annotations[ANNOTATION.image];
  if (named !== undefined && named !== image)
    throw refused(`the manifest names image '${printable(named)}', its config '${image}'`);
  if (value.release !== undefined) checkRelease(value.release, image, revision as number);
  if (!Array.isArray(value.dirs) || !Array.isArray(value.files) || !Array.isArray(value.disks))
    throw bad('dirs, files and disks must be lists');
  if (value.dirs.length + value.files.length >= PACK_LIMITS.entries)
    throw bad(`more than ${PACK_LIMITS.entries} files and directories`);
  const paths = new Set<string>();
  for (const d of value.dirs) {
    if (typeof d !== 'string' || !isSafeRelPath(d))
      throw bad(`unsafe directory '${printable(String(d))}'`);
    if (paths.has(d)) throw bad(`'${printable(d)}' is listed twice`);
    paths.add(d);
  }
  const contents = new Map<string, Buffer>();
  for (const f of value.files as unknown[]) {
    const file = checkFile(f, paths);
    contents.set(file.path, file.bytes);
  }
  if (!contents.has('image.yaml')) throw bad('the image has no image.yaml');
  checkParsed(value.descriptor, contents.get('image.yaml')!, 'descriptor', 'image.yaml');
  if (!isObject(value.records)) throw bad('records is not an object');
  const recordFiles = [...contents.keys()].filter((p) => /^records\/[^/]+\.yaml$/.test(p));
  if (Object.keys(value.records).length !== recordFiles.length)
    throw bad('records does not list exactly the records/*.yaml files');
  for (const path of recordFiles) {
    const name = path.slice('records/'.length, -'.yaml'.length);
    checkParsed(value.records[name], contents.get(path)!, `records.${name}`, path);
  }
  const blobs = checkDisks(value.disks as unknown[], manifest);
  return { config: value as unknown as ImageConfig, contents, blobs };
}

function checkRelease(value: unknown, image: string, revision: number): void {
  if (
    !isObject(value) ||
    value.ref !== `${image}@${revision}` ||
    typeof value.created_at !== 'string' ||
    typeof value.created_by !== 'string'
  )
    throw refused(`config: release must be {ref: ${image}@${revision}, created_at, created_by}`);
}

function checkFile(value: unknown, paths: Set<string>): { path: string; bytes: Buffer } {
  const bad = (what: string) => refused(`config: ${what}`);
  if (!isObject(value)) throw bad('a file entry is not an object');
  const { path, size, sha256, mode, encoding, content } = value;
  if (typeof path !== 'string' || !isSafeRelPath(path))
    throw bad(`unsafe file path '${printable(String(path))}'`);
  if (paths.has(path)) throw bad(`'${printable(path)}' is listed twice`);
  paths.add(path);
  if (!isSize(size) || !isSha256(sha256) || (mode !== 0o644 && mode !== 0o755))
    throw bad(`file '${printable(path)}' needs size, sha256 and mode 420 or 493`);
  if (typeof content !== 'string' || (encoding !== 'utf-8' && encoding !== 'base64'))
    throw bad(`file '${printable(path)}' needs content, in utf-8 or base64`);
  const bytes = Buffer.from(content, encoding === 'utf-8' ? 'utf8' : 'base64');
  if (encoding === 'base64' && bytes.toString('base64') !== content)
    throw bad(`file '${printable(path)}' is not valid base64`);
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (bytes.length !== size || digest !== sha256)
    throw new ImgctlError(
      'INTEGRITY',
      `refused the artifact: file ${printable(path)} does not match the config: ${bytes.length} bytes with sha256 ${digest}, expected ${size} bytes with sha256 ${sha256}`,
      { hint: 'the config was altered; nothing was changed' },
    );
  return { path, bytes };
}

/** A descriptor or record given as JSON must be its YAML file, parsed. */
function checkParsed(value: unknown, bytes: Buffer, what: string, path: string): void {
  const yaml = parseYaml(path, bytes.toString('utf8'));
  if (yaml.problems.length > 0) throw refused(`${path} is not valid YAML`);
  if (!isDeepStrictEqual(value, yaml.value))
    throw refused(`config: ${what} is not what ${path} holds`);
}

function checkDisks(disks: unknown[], manifest: ParsedManifest): ParsedConfig['blobs'] {
  const bad = (what: string) => refused(`config: ${what}`);
  /** each layer by digest and media type: the same bytes may be a disk and another's segment */
  const key = (digest: unknown, mediaType: string) => `${String(digest)} ${mediaType}`;
  const layers = new Map(manifest.layers.map((l) => [key(l.digest, l.mediaType), l]));
  const used = new Set<string>();
  const ids = new Set<string>();
  const blobs = new Map<string, number>();
  for (const d of disks) {
    if (!isObject(d)) throw bad('a disk entry is not an object');
    const { id, use, format, size, sha256 } = d;
    if (typeof id !== 'string' || !isValidName(id)) throw bad('a disk has no valid id');
    if (ids.has(id)) throw bad(`disk '${id}' is listed twice`);
    ids.add(id);
    if (typeof use !== 'string' || !USES.has(use)) throw bad(`disk '${id}' has no valid use`);
    if (typeof format !== 'string' || !FORMATS.has(format))
      throw bad(`disk '${id}' has no valid format`);
    if (!isSize(size) || !isSha256(sha256)) throw bad(`disk '${id}' needs size and sha256`);
    if (blobs.has(sha256) && blobs.get(sha256) !== size)
      throw bad(`disk '${id}' gives content ${sha256} another size`);
    blobs.set(sha256, size);
    if (!Array.isArray(d.layers) || d.layers.length === 0) throw bad(`disk '${id}' has no layers`);
    const segmented = d.layers.length > 1;
    let total = 0;
    const type = diskMediaType(format, segmented);
    for (const digest of d.layers as unknown[]) {
      const layer = layers.get(key(digest, type));
      if (!layer)
        throw refused(
          `disk '${id}' names a layer the manifest does not list as ${type}: ${printable(String(digest))}`,
        );
      used.add(key(layer.digest, layer.mediaType));
      total += layer.size;
    }
    if (!segmented && d.layers[0] !== `sha256:${sha256}`)
      throw refused(`the layer of disk '${id}' is not named by the disk's sha256`);
    if (total !== size)
      throw refused(`the layers of disk '${id}' add up to ${total} bytes, not ${size}`);
  }
  const unused = manifest.layers.find((l) => !used.has(key(l.digest, l.mediaType)));
  if (unused) throw refused(`layer ${unused.digest} belongs to no disk`);
  return [...blobs].map(([sha256, size]) => ({ sha256, size }));
}
