/**
 * A KubeVirt containerDisk of an image's system disk (`imgctl push … --containerdisk`,
 * docs/distribution.md): a runnable OCI image of one uncompressed tar layer holding `/disk/`
 * and the disk file in it, owned by 107:107 (the qemu user of KubeVirt's launcher) with mode
 * 0440, as KubeVirt's containerDisk expects. The layer's bytes are the tar stream, so its digest
 * is not the disk's sha256: it is computed here by reading the disk once; the layer's source
 * then streams the same bytes again from any offset (an upload resumes). Everything else is
 * fixed — owner, mode, a zero mtime — so the same disk always gives the same digests.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { digestOf, OCI_MANIFEST } from '../registry/registry.ts';
import type { BlobSource } from '../registry/types.ts';
import { tarHeader } from './pack.ts';

export const OCI_IMAGE_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_TAR_LAYER = 'application/vnd.oci.image.layer.v1.tar';
/** KubeVirt's launcher runs qemu as 107:107 */
const QEMU = { uid: 107, gid: 107 };

export interface ContainerDisk {
  /** the tar layer: `disk/` and `disk/<file>` */
  layer: BlobSource & { mediaType: string };
  config: { mediaType: string; bytes: Buffer; digest: string };
  manifest: { mediaType: string; bytes: Buffer; digest: string };
}

/** The pieces of the tar stream, in order: fixed buffers, and the disk file's bytes. */
type Piece = { bytes: Buffer } | { file: string; size: number };

/** The containerDisk of `file` (the system disk), named `disk/<name>` in its layer. */
export async function containerDisk(
  file: string,
  name: string,
  annotations: Record<string, string> = {},
): Promise<ContainerDisk> {
  const size = (await stat(file)).size;
  const pieces: Piece[] = [
    { bytes: tarHeader('disk/', 'Directory', 0, 0o555, QEMU) },
    { bytes: tarHeader(`disk/${name}`, 'File', size, 0o440, QEMU) },
    { file, size },
    // the file padded to a 512-byte block, then the two zero blocks that end a tar
    { bytes: Buffer.alloc(((512 - (size % 512)) % 512) + 1024) },
  ];
  const total = pieces.reduce((n, p) => n + ('bytes' in p ? p.bytes.length : p.size), 0);
  const hash = createHash('sha256');
  for await (const chunk of streamPieces(pieces, 0)) hash.update(chunk as Buffer);
  const layerDigest = `sha256:${hash.digest('hex')}`;

  const configBytes = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
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
      ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
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
  };
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
        for await (const chunk of createReadStream(piece.file, { start: skip }))
          yield chunk as Buffer;
      skip = 0;
    }
  }
  return Readable.from(generate());
}
