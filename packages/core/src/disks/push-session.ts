/**
 * What the two pushes share — the OCI artifact of push.ts and the KubeVirt containerDisk of
 * push-containerdisk.ts (docs/distribution.md): the target and its tag, the image or release
 * read whole before anything is sent, and a session on the registry that pushes each blob
 * (skipped when present, mounted from `mountFrom`, else uploaded in resumable chunks), reports
 * its fate, and puts the manifest under the tag.
 */
import { lstat, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { humanSize } from '../util/sizes.ts';
import { loadDocument } from '../validate/load.ts';
import { refuseRevoked, resolveImageRef } from '../store/releases.ts';
import { storePaths } from '../store/store.ts';
import type { ImageDoc } from '../store/types.ts';
import { formatOciReference, parseOciReference } from '../registry/reference.ts';
import { openRegistry } from '../registry/registry.ts';
import type {
  BlobSource,
  OciReference,
  PushedBlob,
  Registry,
  RegistryOptions,
} from '../registry/types.ts';
import type { ArtifactInput, ArtifactRelease, DiskInput, OpenRegistry } from './oci-artifact.ts';
import { listImageTree } from './pack.ts';

export interface PushProgress {
  /** what is being moved or hashed: `disk root`, `config`, `hashing disk root` */
  step: string;
  done: number;
  total: number;
}

/** The options of every push, artifact or containerDisk. */
export interface PushSessionOptions {
  /** how to reach the registry: credentials file, CA, plain http, chunk size, log */
  registry?: Omit<RegistryOptions, 'onProgress' | 'uploadStateDir'>;
  /** repositories of the same registry to mount blobs from instead of uploading them */
  mountFrom?: string[];
  /** `created` of a working image (SOURCE_DATE_EPOCH); a release's is its creation */
  created?: Date;
  /** the registry client (default registry/registry.ts's; tests pass a fake) */
  openRegistry?: OpenRegistry;
  onProgress?: (progress: PushProgress) => void;
}

export interface PushedBlobReport extends PushedBlob {
  size: number;
  /** `config`, `disk root`, `disk root segment 2/3`, `containerDisk layer` */
  what: string;
}

/** What every push reports. */
export interface PushedManifest {
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
}

/** What push reads of an image or a release: the artifact's input and the blobs' files. */
export interface ImageContent {
  input: Omit<ArtifactInput, 'disks'>;
  /** image.yaml */
  descriptor: ImageDoc;
  /** the disks whose content is a blob of the store, in the descriptor's order */
  disks: Array<Omit<DiskInput, 'segments'> & { file: string }>;
  /** NAME or NAME@REV: what a signature's plan is resolved from */
  planRef: string;
}

/** The push target, which must name a tag (or none), not a digest: USAGE otherwise. */
export function pushTarget(target: string): OciReference {
  const ref = parseOciReference(target);
  if (ref.digest)
    throw new ImgctlError('USAGE', `push to a tag, not a digest: ${target}`, {
      hint: 'the manifest digest is what the push makes; it is printed at the end',
    });
  return ref;
}

/** INTEGRITY: a disk blob of the store no longer hashes to its sha256. */
export function damagedBlob(
  disk: { id: string; size: number; sha256: string },
  digest: string,
): ImgctlError {
  return new ImgctlError(
    'INTEGRITY',
    `the blob of disk '${disk.id}' (${humanSize(disk.size)}) hashes to ${digest}, not ${disk.sha256}`,
    { hint: "the store's copy of this disk is damaged; 'imgctl verify' finds every such blob" },
  );
}

/**
 * FAILED once Ctrl-C (the registry options' `windDown`) came while a disk is read before the
 * upload: nothing was sent yet, and a disk of many GiB would otherwise be read to its end first.
 */
export function stopIfWoundDown(options: PushSessionOptions, what: string): void {
  if (options.registry?.windDown?.aborted)
    throw new ImgctlError('FAILED', `interrupted while ${what}: nothing was sent`);
}

export interface PushSession {
  registry: Registry;
  progress(step: string, done: number, total: number): void;
  /** pushes one blob and adds it, as `what`, to the report */
  push(what: string, source: BlobSource): Promise<void>;
  /** puts the manifest under `tag`; INTEGRITY when the registry names it by another digest */
  putManifest(
    tag: string,
    manifest: { mediaType: string; bytes: Buffer; digest: string },
  ): Promise<void>;
  /** the report of the pushed manifest */
  result(
    content: ImageContent,
    tag: string,
    manifest: { bytes: Buffer; digest: string },
  ): PushedManifest;
}

/**
 * A session on the registry of `ref`: unfinished uploads kept under the store's state, so a
 * push killed in the middle of a blob resumes it the next time.
 */
export async function openPushSession(
  storeDir: string,
  ref: OciReference,
  options: PushSessionOptions,
): Promise<PushSession> {
  const stateDir = join(storePaths.stateDir(storeDir), 'registry-uploads');
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const progress = (step: string, done: number, total: number) =>
    options.onProgress?.({ step, done, total });
  let current = '';
  const registry = (options.openRegistry ?? openRegistry)(ref, {
    ...options.registry,
    uploadStateDir: stateDir,
    onProgress: (done, total) => progress(current, done, total),
  });
  const blobs: PushedBlobReport[] = [];
  return {
    registry,
    progress,
    async push(what, source) {
      current = what;
      const pushed = await registry.pushBlob(ref.repository, source, {
        mountFrom: options.mountFrom,
      });
      blobs.push({ ...pushed, size: source.size, what });
    },
    async putManifest(tag, manifest) {
      current = 'manifest';
      const digest = await registry.putManifest(ref.repository, tag, manifest);
      if (digest !== manifest.digest)
        throw new ImgctlError(
          'INTEGRITY',
          `the registry stored the manifest as ${digest}, not ${manifest.digest}`,
        );
    },
    result: (content, tag, manifest) => ({
      image: content.input.image,
      revision: content.input.revision,
      ...(content.input.release ? { release: content.input.release.ref } : {}),
      reference: formatOciReference({ ...ref, tag, digest: manifest.digest }),
      repository: ref.repository,
      tag,
      digest: manifest.digest,
      manifestBytes: manifest.bytes.length,
      blobs,
      sentBytes: blobs.reduce((n, b) => n + b.sentBytes, 0),
    }),
  };
}

/**
 * The image `refText` names, read whole: the working image from `images/NAME/`, a release from
 * its frozen copy (a revoked one refused); its files, and each disk whose content is a blob
 * (NOT_FOUND when the store lacks one).
 */
export async function readImageContent(
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
    descriptor: image,
    disks,
    planRef: r ? `${name}@${r.revision}` : name,
  };
}
