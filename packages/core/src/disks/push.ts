/**
 * `imgctl push REF oci://HOST[:PORT]/REPO[:TAG]` (docs/distribution.md): an image or a release
 * as the OCI artifact of oci-artifact.ts — each disk's blob (a layer named by its sha256, or its
 * segments, then the disk index of each segmented disk), the config, the manifest under the
 * tag, and for a release of a store that signs, its plan signed as a referrer of the manifest.
 * Blobs the registry has are skipped, others mounted from `mountFrom` repositories or uploaded
 * in resumable chunks by the registry client (push-session.ts, shared with the containerDisk of
 * push-containerdisk.ts).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { ImgctlError } from '../util/errors.ts';
import type { BlobSource } from '../registry/types.ts';
import {
  bufferSource,
  buildImageArtifact,
  DEFAULT_SEGMENT_SIZE,
  type DiskInput,
  EMPTY_CONFIG,
  MIN_SEGMENT_SIZE,
} from './oci-artifact.ts';
import { buildDiskIndex, diskIndexTag } from './oci-disk-index.ts';
import { prepareSignature, pushSignature, type SignatureResult } from './oci-signature.ts';
import {
  damagedBlob,
  openPushSession,
  type PushedManifest,
  type PushSession,
  type PushSessionOptions,
  pushTarget,
  readImageContent,
  stopIfWoundDown,
} from './push-session.ts';

export type { PushedBlobReport, PushProgress } from './push-session.ts';

export interface PushOptions extends PushSessionOptions {
  /** disks larger than this are pushed as several layers (default 16 GiB) */
  segmentSize?: number;
  /** when the signature is made (default now) */
  now?: Date;
}

export interface PushResult extends PushedManifest {
  /** the tags of the disk indexes of segmented disks (`disk-<sha256>`) */
  diskIndexes?: string[];
  signature?: SignatureResult;
}

/**
 * Pushes `refText` (NAME, NAME@REV or NAME@CHANNEL) to `target`. The tag defaults to the image's
 * revision. Everything is read and checked before the first byte is sent: a revoked release is
 * INTEGRITY, a disk blob missing from the store NOT_FOUND, a segmented disk whose content no
 * longer hashes to its sha256 INTEGRITY. Registry errors are the client's ImgctlErrors.
 */
export async function pushImage(
  storeDir: string,
  refText: string,
  target: string,
  options: PushOptions,
): Promise<PushResult> {
  const ref = pushTarget(target);
  const segmentSize = options.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  if (!Number.isSafeInteger(segmentSize) || segmentSize < MIN_SEGMENT_SIZE)
    throw new ImgctlError('USAGE', `the segment size must be at least 1 MiB, not ${segmentSize}`);
  const content = await readImageContent(storeDir, refText, options.created);
  const progress = (step: string, done: number, total: number) =>
    options.onProgress?.({ step, done, total });

  const disks: DiskInput[] = [];
  for (const disk of content.disks) {
    // two disks of the same content: one layer, hashed once, one disk index
    const same = disks.find((d) => d.sha256 === disk.sha256);
    const segments = same
      ? same.segments
      : disk.size > segmentSize
        ? await hashSegments(disk, segmentSize, (done) => {
            stopIfWoundDown(options, `hashing disk ${disk.id}`);
            progress(`hashing disk ${disk.id}`, done, disk.size);
          })
        : [{ digest: `sha256:${disk.sha256}`, size: disk.size }];
    disks.push({ ...disk, segments });
  }
  const artifact = buildImageArtifact({ ...content.input, disks });
  const tag = ref.tag ?? String(content.input.revision);
  const signing = content.input.release
    ? await prepareSignature(storeDir, content.planRef)
    : undefined;

  const session = await openPushSession(storeDir, ref, options);
  const files = new Map(content.disks.map((d) => [d.sha256, d.file]));
  for (const layer of artifact.layers) {
    const disk = disks.find((d) => d.sha256 === layer.sha256)!;
    const index = disk.segments.findIndex((s) => s.digest === layer.digest);
    const what =
      disk.segments.length > 1
        ? `disk ${disk.id} segment ${index + 1}/${disk.segments.length}`
        : `disk ${disk.id}`;
    await session.push(
      what,
      fileSource(files.get(layer.sha256)!, layer.digest, layer.offset, layer.size),
    );
  }
  const diskIndexes = await pushDiskIndexes(session, disks);
  await session.push('config', bufferSource(artifact.config.bytes));
  await session.putManifest(tag, artifact.manifest);
  const signature =
    signing &&
    (await pushSignature(session.registry, ref.repository, signing, {
      subject: {
        mediaType: artifact.manifest.mediaType,
        digest: artifact.manifest.digest,
        size: artifact.manifest.bytes.length,
      },
      now: options.now ?? new Date(),
      push: session.push,
    }));
  return {
    ...session.result(content, tag, artifact.manifest),
    ...(diskIndexes.length > 0 ? { diskIndexes } : {}),
    ...(signature ? { signature } : {}),
  };
}

/**
 * For each disk pushed in segments, its disk index under the tag `disk-<sha256>`
 * (oci-disk-index.ts): how an agent that knows only the disk's sha256 finds the segments.
 * Returns the tags.
 */
async function pushDiskIndexes(session: PushSession, disks: DiskInput[]): Promise<string[]> {
  const segmented = disks.filter(
    (d, i) => d.segments.length > 1 && disks.findIndex((o) => o.sha256 === d.sha256) === i,
  );
  if (segmented.length > 0)
    await session.push('disk index config', bufferSource(EMPTY_CONFIG.bytes));
  const tags: string[] = [];
  for (const disk of segmented) {
    const tag = diskIndexTag(disk.sha256);
    await session.putManifest(tag, buildDiskIndex(disk));
    tags.push(tag);
  }
  return tags;
}

const READ_CHUNK = 1024 * 1024;

/**
 * The digests of a disk's segments of `segmentSize` bytes, read once; the whole disk is hashed
 * on the way and must be its sha256 (INTEGRITY otherwise: the store's blob is damaged).
 */
async function hashSegments(
  disk: { id: string; file: string; size: number; sha256: string },
  segmentSize: number,
  onBytes: (done: number) => void,
): Promise<Array<{ digest: string; size: number }>> {
  const whole = createHash('sha256');
  const segments: Array<{ digest: string; size: number }> = [];
  const buffer = Buffer.allocUnsafe(READ_CHUNK);
  const handle = await open(disk.file, 'r');
  try {
    let position = 0;
    while (position < disk.size) {
      const size = Math.min(segmentSize, disk.size - position);
      const hash = createHash('sha256');
      for (let done = 0; done < size;) {
        const { bytesRead } = await handle.read(
          buffer,
          0,
          Math.min(buffer.length, size - done),
          position + done,
        );
        if (bytesRead === 0) break;
        const data = buffer.subarray(0, bytesRead);
        hash.update(data);
        whole.update(data);
        done += bytesRead;
        onBytes(position + done);
      }
      segments.push({ digest: `sha256:${hash.digest('hex')}`, size });
      position += size;
    }
  } finally {
    await handle.close();
  }
  const digest = whole.digest('hex');
  if (digest !== disk.sha256) throw damagedBlob(disk, digest);
  return segments;
}

/** `size` bytes of a blob file from `start`, opened again at any offset to resume. */
function fileSource(file: string, digest: string, start: number, size: number): BlobSource {
  return {
    digest,
    size,
    open: (offset) =>
      offset >= size
        ? Readable.from([])
        : createReadStream(file, {
            start: start + offset,
            end: start + size - 1,
            highWaterMark: READ_CHUNK,
          }),
  };
}
