/**
 * A KubeVirt containerDisk of an image's system disk (`imgctl push … --containerdisk`,
 * docs/distribution.md): a runnable OCI image of one uncompressed tar layer holding `/disk/`
 * and the disk file in it, owned by 107:107 (the qemu user of KubeVirt's launcher) with mode
 * 0440, as KubeVirt's containerDisk expects. The layer's bytes are the tar stream, so its digest
 * is not the disk's sha256: it is computed here by reading the disk once (unless the caller
 * knows it); the layer's source then streams the same bytes again from any offset (an upload
 * resumes). Everything else is
 * fixed — owner, mode, a zero mtime — so the same disk always gives the same digests.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { ImgctlError } from '../util/errors.ts';
import { digestOf, OCI_MANIFEST } from '../registry/registry.ts';
import type { BlobSource } from '../registry/types.ts';
import { tarHeader } from './pack.ts';

export const OCI_IMAGE_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_TAR_LAYER = 'application/vnd.oci.image.layer.v1.tar';
/** KubeVirt's launcher runs qemu as 107:107 */
const QEMU = { uid: 107, gid: 107 };
const READ_CHUNK = 1024 * 1024;

export interface ContainerDiskInput {
  /** the disk's blob */
  file: string;
  /** its name in the layer: `disk/<name>` */
  name: string;
  /** the OCI architecture of the config (ociArchitecture) */
  architecture: string;
  /** RFC 3339: the config's `created`; none makes none, so the bytes stay the same */
  created?: string;
  /** the config's `Labels` and the manifest's annotations */
  annotations?: Record<string, string>;
  /** bytes of the disk read so far while hashing */
  onBytes?: (done: number, total: number) => void;
  /**
   * the layer's digest when it is known (the registry has that layer): the disk is not read,
   * and `diskSha256` is undefined
   */
  layerDigest?: string;
}

export interface ContainerDisk {
  /** the tar layer: `disk/` and `disk/<file>` */
  layer: BlobSource & { mediaType: string };
  config: { mediaType: string; bytes: Buffer; digest: string };
  manifest: { mediaType: string; bytes: Buffer; digest: string };
  /** the disk file's sha256 (hex), hashed on the same read as the layer; none when not read */
  diskSha256?: string;
}

/** The pieces of the tar stream, in order: fixed buffers, and the disk file's bytes. */
type Piece = { bytes: Buffer } | { file: string; size: number };

/** OCI (Go) names of the architectures a descriptor names as the kernel does. */
const OCI_ARCHITECTURES: Readonly<Record<string, string>> = {
  x86_64: 'amd64',
  amd64: 'amd64',
  aarch64: 'arm64',
  arm64: 'arm64',
  i686: '386',
  i386: '386',
  ppc64le: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
};

/** The OCI architecture of a descriptor's `arch` (x86_64 → amd64, aarch64 → arm64), if known. */
export function ociArchitecture(arch: string): string | undefined {
  return OCI_ARCHITECTURES[arch];
}

/**
 * The containerDisk of `input.file` (the system disk), named `disk/<name>` in its layer. The
 * disk is read once: it gives the layer's digest and the disk's own sha256, which the caller
 * compares with the one the store names it by.
 */
export async function containerDisk(input: ContainerDiskInput): Promise<ContainerDisk> {
  const { file, name } = input;
  const size = (await stat(file)).size;
  const pieces: Piece[] = [
    { bytes: tarHeader('disk/', 'Directory', 0, 0o555, QEMU) },
    { bytes: tarHeader(`disk/${name}`, 'File', size, 0o440, QEMU) },
    { file, size },
    // the file padded to a 512-byte block, then the two zero blocks that end a tar
    { bytes: Buffer.alloc(((512 - (size % 512)) % 512) + 1024) },
  ];
  const total = pieces.reduce((n, p) => n + ('bytes' in p ? p.bytes.length : p.size), 0);
  const hashed = input.layerDigest === undefined ? await hashLayer(pieces, input) : undefined;
  const layerDigest = input.layerDigest ?? hashed!.layer;
  const annotations = input.annotations ?? {};
  const labelled = Object.keys(annotations).length > 0;

  const configBytes = Buffer.from(
    JSON.stringify({
      ...(input.created ? { created: input.created } : {}),
      architecture: input.architecture,
      os: 'linux',
      config: labelled ? { Labels: annotations } : {},
      rootfs: { type: 'layers', diff_ids: [layerDigest] },
    }),
  );
  const config = { mediaType: OCI_IMAGE_CONFIG, bytes: configBytes, digest: digestOf(configBytes) };
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_IMAGE_CONFIG, digest: config.digest, size: configBytes.length },
      layers: [{ mediaType: OCI_TAR_LAYER, digest: layerDigest, size: total }],
      ...(labelled ? { annotations } : {}),
    }),
  );
  return {
    layer: {
      mediaType: OCI_TAR_LAYER,
      digest: layerDigest,
      size: total,
      open: (offset) => streamPieces(pieces, offset),
    },
    config,
    manifest: { mediaType: OCI_MANIFEST, bytes: manifestBytes, digest: digestOf(manifestBytes) },
    ...(hashed ? { diskSha256: hashed.disk } : {}),
  };
}

/** The layer's digest and the disk's sha256 (hex), on one read of the disk. */
async function hashLayer(
  pieces: Piece[],
  input: ContainerDiskInput,
): Promise<{ layer: string; disk: string }> {
  const layerHash = createHash('sha256');
  const diskHash = createHash('sha256');
  for (const piece of pieces) {
    if ('bytes' in piece) {
      layerHash.update(piece.bytes);
      continue;
    }
    let done = 0;
    for await (const chunk of createReadStream(piece.file, { highWaterMark: READ_CHUNK })) {
      layerHash.update(chunk as Buffer);
      diskHash.update(chunk as Buffer);
      done += (chunk as Buffer).length;
      input.onBytes?.(done, piece.size);
    }
    if (done !== piece.size)
      throw new ImgctlError(
        'FAILED',
        `${piece.file} changed size while it was read (${piece.size} → ${done})`,
      );
  }
  return { layer: `sha256:${layerHash.digest('hex')}`, disk: diskHash.digest('hex') };
}

/** The tar stream from `offset`. */
function streamPieces(pieces: Piece[], offset: number): Readable {
  async function* generate() {
    let skip = offset;
    for (const piece of pieces) {
      const length = 'bytes' in piece ? piece.bytes.length : piece.size;
      if (skip >= length) {
        skip -= length;
        continue;
      }
      if ('bytes' in piece) yield piece.bytes.subarray(skip);
      else
        for await (const chunk of createReadStream(piece.file, {
          start: skip,
          highWaterMark: READ_CHUNK,
        }))
          yield chunk as Buffer;
      skip = 0;
    }
  }
  return Readable.from(generate());
}
