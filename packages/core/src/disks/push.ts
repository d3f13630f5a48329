/**
 * `imgctl push REF oci://HOST[:PORT]/REPO[:TAG]` (docs/distribution.md): an image or a release
 * as the OCI artifact of oci-artifact.ts — each disk's blob (a layer named by its sha256, or its
 * segments), the config, the manifest under the tag, and for a release of a store that signs,
 * its plan signed as a referrer of the manifest. Blobs the registry has are skipped, others
 * mounted from `mountFrom` repositories or uploaded in resumable chunks by the registry client.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ImgctlError } from '../util/errors.ts';
import { humanSize } from '../util/sizes.ts';
import { loadDocument } from '../validate/load.ts';
import { refuseRevoked, resolveImageRef } from '../store/releases.ts';
import { storePaths } from '../store/store.ts';
import type { ImageDoc } from '../store/types.ts';
import { formatOciReference, parseOciReference } from '../registry/reference.ts';
import { openRegistry } from '../registry/registry.ts';
import type { BlobSource, PushedBlob, RegistryOptions } from '../registry/types.ts';
import {
  type ArtifactInput,
  type ArtifactRelease,
  bufferSource,
  buildImageArtifact,
  DEFAULT_SEGMENT_SIZE,
  type DiskInput,
  MIN_SEGMENT_SIZE,
  type OpenRegistry,
} from './oci-artifact.ts';
import { prepareSignature, pushSignature, type SignatureResult } from './oci-signature.ts';
import { listImageTree } from './pack.ts';

export interface PushProgress {
  /** what is being moved or hashed: `disk root`, `config`, … */
  step: string;
  done: number;
  total: number;
}

export interface PushOptions {
  /** how to reach the registry: credentials file, CA, plain http, chunk size, log */
  registry?: Omit<RegistryOptions, 'onProgress' | 'uploadStateDir'>;
  /** disks larger than this are pushed as several layers (default 16 GiB) */
  segmentSize?: number;
  /** repositories of the same registry to mount blobs from instead of uploading them */
  mountFrom?: string[];
  /** `created` of a working image (SOURCE_DATE_EPOCH); a release's is its creation */
  created?: Date;
  /** when the signature is made (default now) */
  now?: Date;
  /** the registry client (default registry/registry.ts's; tests pass a fake) */
  openRegistry?: OpenRegistry;
  onProgress?: (progress: PushProgress) => void;
}

export interface PushedBlobReport extends PushedBlob {
  size: number;
  /** `config`, `disk root`, `disk root segment 2/3` */
  what: string;
}

export interface PushResult {
  image: string;
  revision: number;
  /** NAME@REV when a release was pushed */
  release?: string;
  /** `oci://HOST/REPO:TAG@sha256:…` */
  reference: string;
  repository: string;
  tag: string;
  /** the manifest's digest */
  digest: string;
  manifestBytes: number;
  blobs: PushedBlobReport[];
  /** bytes uploaded, all blobs */
  sentBytes: number;
  signature?: SignatureResult;
}

/** What push reads of an image or a release: the artifact's input and the blobs' files. */
interface ImageContent {
  input: Omit<ArtifactInput, 'disks'>;
  disks: Array<Omit<DiskInput, 'segments'> & { file: string }>;
  /** NAME or NAME@REV: what a signature's plan is resolved from */
  planRef: string;
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
  const ref = parseOciReference(target);
  if (ref.digest)
    throw new ImgctlError('USAGE', `push to a tag, not a digest: ${target}`, {
      hint: 'the manifest digest is what the push makes; it is printed at the end',
    });
  const segmentSize = options.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  if (!Number.isSafeInteger(segmentSize) || segmentSize < MIN_SEGMENT_SIZE)
    throw new ImgctlError('USAGE', `the segment size must be at least 1 MiB, not ${segmentSize}`);
  const content = await readImageContent(storeDir, refText, options.created);
  const progress = (step: string, done: number, total: number) =>
    options.onProgress?.({ step, done, total });

  const disks: DiskInput[] = [];
  for (const disk of content.disks) {
    const segments =
      disk.size > segmentSize
        ? await hashSegments(disk, segmentSize, (done) =>
            progress(`hashing disk ${disk.id}`, done, disk.size),
          )
        : [{ digest: `sha256:${disk.sha256}`, size: disk.size }];
    disks.push({ ...disk, segments });
  }
  const artifact = buildImageArtifact({ ...content.input, disks });
  const tag = ref.tag ?? String(content.input.revision);
  const signing = content.input.release
    ? await prepareSignature(storeDir, content.planRef)
    : undefined;

  await mkdir(uploadStateDir(storeDir), { recursive: true, mode: 0o700 });
  let current = '';
  const registry = (options.openRegistry ?? openRegistry)(ref, {
    ...options.registry,
    uploadStateDir: uploadStateDir(storeDir),
    onProgress: (done, total) => progress(current, done, total),
  });
  const blobs: PushedBlobReport[] = [];
  const push = async (what: string, source: BlobSource) => {
    current = what;
    const pushed = await registry.pushBlob(ref.repository, source, {
      mountFrom: options.mountFrom,
    });
    blobs.push({ ...pushed, size: source.size, what });
  };
  const files = new Map(content.disks.map((d) => [d.sha256, d.file]));
  for (const layer of artifact.layers) {
    const disk = disks.find((d) => d.sha256 === layer.sha256)!;
    const index = disk.segments.findIndex((s) => s.digest === layer.digest);
    const what =
      disk.segments.length > 1
        ? `disk ${disk.id} segment ${index + 1}/${disk.segments.length}`
        : `disk ${disk.id}`;
    await push(what, fileSource(files.get(layer.sha256)!, layer.digest, layer.offset, layer.size));
  }
  await push('config', bufferSource(artifact.config.bytes));
  current = 'manifest';
  const digest = await registry.putManifest(ref.repository, tag, artifact.manifest);
  if (digest !== artifact.manifest.digest)
    throw new ImgctlError(
      'INTEGRITY',
      `the registry stored the manifest as ${digest}, not ${artifact.manifest.digest}`,
    );
  const signature =
    signing &&
    (await pushSignature(registry, ref.repository, signing, {
      subject: {
        mediaType: artifact.manifest.mediaType,
        digest,
        size: artifact.manifest.bytes.length,
      },
      now: options.now ?? new Date(),
      push,
    }));
  return {
    image: content.input.image,
    revision: content.input.revision,
    ...(content.input.release ? { release: content.input.release.ref } : {}),
    reference: formatOciReference({ ...ref, tag, digest }),
    repository: ref.repository,
    tag,
    digest,
    manifestBytes: artifact.manifest.bytes.length,
    blobs,
    sentBytes: blobs.reduce((n, b) => n + b.sentBytes, 0),
    ...(signature ? { signature } : {}),
  };
}

/** Where a killed push finds the upload it can resume (the registry client keeps it there). */
function uploadStateDir(storeDir: string): string {
  return join(storePaths.stateDir(storeDir), 'registry-uploads');
}

/**
 * The image `refText` names, read whole: the working image from `images/NAME/`, a release from
 * its frozen copy (a revoked one refused); its files, and each disk whose content is a blob.
 */
async function readImageContent(
  storeDir: string,
  refText: string,
  created: Date | undefined,
): Promise<ImageContent> {
  const resolved = await resolveImageRef(storeDir, refText);
  refuseRevoked(resolved);
  const name = resolved.name;
  const dir = storePaths.imageDir(resolved.root, name);
  const shown = resolved.release
    ? `releases/${name}/${resolved.release.revision}/images/${name}/image.yaml`
    : storePaths.rel.imageFile(name);
  const { value: image } = await loadDocument<ImageDoc>('Image', join(dir, 'image.yaml'), shown, {
    expectedName: name,
  });
  const { dirs, files } = await listImageTree(dir);
  const read = await Promise.all(
    files.map(async (path) => {
      const st = await lstat(join(dir, path));
      return {
        path,
        mode: st.mode & 0o111 ? 0o755 : 0o644,
        bytes: await readFile(join(dir, path)),
      };
    }),
  );
  const r = resolved.release;
  const release: ArtifactRelease | undefined = r && {
    ref: `${name}@${r.revision}`,
    created_at: r.created_at,
    created_by: r.created_by,
    ...(r.parent ? { parent: r.parent } : {}),
    ...(r.deprecated
      ? {
          deprecated: {
            at: r.deprecated.at,
            ...(r.deprecated.reason ? { reason: r.deprecated.reason } : {}),
          },
        }
      : {}),
  };
  const disks: ImageContent['disks'] = [];
  for (const disk of image.disks) {
    if (disk.blob !== true || disk.sha256 === undefined) continue;
    const file = storePaths.blobFile(storeDir, disk.sha256);
    const size = await lstat(file).then(
      (st) => st.size,
      () => {
        throw new ImgctlError(
          'NOT_FOUND',
          `disk '${disk.id}' of ${refText} has no content in the store (${disk.sha256})`,
          { hint: "'imgctl verify' lists the blobs the store lacks" },
        );
      },
    );
    disks.push({
      id: disk.id,
      use: disk.use,
      format: disk.format,
      size,
      sha256: disk.sha256,
      file,
    });
  }
  return {
    input: {
      image: name,
      revision: image.revision,
      ...(release ? { release } : {}),
      dirs,
      files: read,
      created: r ? r.created_at : created?.toISOString(),
    },
    disks,
    planRef: r ? `${name}@${r.revision}` : name,
  };
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
  if (digest !== disk.sha256)
    throw new ImgctlError(
      'INTEGRITY',
      `the blob of disk '${disk.id}' (${humanSize(disk.size)}) hashes to ${digest}, not ${disk.sha256}`,
      { hint: "the store's copy of this disk is damaged; 'imgctl verify' finds every such blob" },
    );
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
