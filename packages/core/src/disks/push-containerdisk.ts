/**
 * `imgctl push REF oci://HOST[:PORT]/REPO[:TAG] --containerdisk` (docs/distribution.md,
 * "KubeVirt"): the image's boot disk as a KubeVirt containerDisk — a runnable container image
 * (oci-containerdisk.ts) whose one layer holds `/disk/<id>.<format>`. KubeVirt boots one disk
 * from a containerDisk, so the boot disk alone is pushed and the others are reported as left
 * out; the disk stays in its stored format, which must be one KubeVirt reads (raw or qcow2).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { storePaths } from '../store/store.ts';
import type { ImageDoc } from '../store/types.ts';
import { isObject } from '../validate/values.ts';
import { ANNOTATION, bufferSource } from './oci-artifact.ts';
import { containerDisk, ociArchitecture } from './oci-containerdisk.ts';
import {
  damagedBlob,
  type ImageContent,
  openPushSession,
  type PushedManifest,
  type PushSessionOptions,
  pushTarget,
  readImageContent,
  stopIfWoundDown,
} from './push-session.ts';

/** the formats KubeVirt's containerDisk boots */
const KUBEVIRT_FORMATS: ReadonlySet<string> = new Set(['raw', 'qcow2']);
/** the disk's own sha256 (the layer's digest is the tar's) */
const DISK_SHA256 = 'dev.imgctl.disk.sha256';
/** how the layer is made (oci-containerdisk.ts): cached digests of another are not used */
const LAYER_FORMAT = 1;

export type ContainerDiskPushOptions = PushSessionOptions;

export interface ContainerDiskPushResult extends PushedManifest {
  containerDisk: {
    /** the disk pushed: the boot disk */
    disk: string;
    format: string;
    /** its path in the layer: `/disk/root.qcow2` */
    path: string;
    /** the disk's sha256 (hex), as the descriptor names it */
    sha256: string;
    size: number;
    /** the layer's digest (the tar's) */
    layer: string;
    /** OCI architecture: amd64, arm64 */
    architecture: string;
    /** the image's other disks, not in the containerDisk */
    leftOut: Array<{ id: string; use: string }>;
  };
}

/**
 * Pushes the boot disk of `refText` (NAME, NAME@REV or NAME@CHANNEL) to `target` as a
 * containerDisk; the tag defaults to the revision. Refused before anything is sent: an image
 * without a system disk or an architecture KubeVirt knows (VALIDATION), a boot disk without
 * content in the store (NOT_FOUND) or in another format than raw or qcow2 (VALIDATION), a disk
 * whose blob no longer hashes to its sha256 (INTEGRITY; the disk is not read at all when the
 * registry has the layer an earlier push made of it).
 */
export async function pushContainerDisk(
  storeDir: string,
  refText: string,
  target: string,
  options: ContainerDiskPushOptions,
): Promise<ContainerDiskPushResult> {
  const ref = pushTarget(target);
  const content = await readImageContent(storeDir, refText, options.created);
  const image = content.descriptor;
  const boot = bootDisk(image, refText);
  const disk = content.disks.find((d) => d.id === boot.id);
  if (!disk)
    throw new ImgctlError('NOT_FOUND', `disk '${boot.id}' of ${refText} has no content yet`, {
      hint: `a containerDisk holds the boot disk's bytes: 'imgctl build ${content.input.image}' or 'imgctl disk add' first`,
    });
  if (!KUBEVIRT_FORMATS.has(disk.format))
    throw new ImgctlError(
      'VALIDATION',
      `disk '${disk.id}' of ${refText} is ${disk.format}: a KubeVirt containerDisk holds raw or qcow2`,
      { hint: 'convert it (qemu-img convert -O qcow2) and add the result as the disk' },
    );
  const architecture = imageArchitecture(image, refText);
  const name = `${disk.id}.${disk.format}`;
  const session = await openPushSession(storeDir, ref, options);
  const layers = layerCache(storeDir, disk.sha256);
  // a layer made of this disk before and in the registry already: the disk need not be read
  const known = await layers.get(name);
  const present =
    known !== undefined && (await session.registry.hasBlob(ref.repository, known))
      ? known
      : undefined;
  const built = await containerDisk({
    file: disk.file,
    name,
    architecture,
    created: content.input.created,
    annotations: annotations(content, disk),
    onBytes: (done, total) => {
      stopIfWoundDown(options, `hashing disk ${disk.id}`);
      options.onProgress?.({ step: `hashing disk ${disk.id}`, done, total });
    },
    layerDigest: present,
  });
  if (built.diskSha256 !== undefined) {
    if (built.diskSha256 !== disk.sha256) throw damagedBlob(disk, built.diskSha256);
    await layers.set(name, built.layer.digest);
  }

  const tag = ref.tag ?? String(content.input.revision);
  await session.push(`layer /disk/${name}`, built.layer);
  await session.push('config', bufferSource(built.config.bytes, built.config.digest));
  await session.putManifest(tag, built.manifest);
  return {
    ...session.result(content, tag, built.manifest),
    containerDisk: {
      disk: disk.id,
      format: disk.format,
      path: `/disk/${name}`,
      sha256: disk.sha256,
      size: disk.size,
      layer: built.layer.digest,
      architecture,
      leftOut: image.disks.filter((d) => d.id !== disk.id).map((d) => ({ id: d.id, use: d.use })),
    },
  };
}

/**
 * The digests of the containerDisk layers made of the disk `hex` (`.state/containerdisk-layers/
 * HEX.json`, by file name in the layer), so that a push whose registry has that layer does not
 * read the disk again. `LAYER_FORMAT` names how the layer is made: another makes other digests.
 */
function layerCache(storeDir: string, hex: string) {
  const file = join(storePaths.stateDir(storeDir), 'containerdisk-layers', `${hex}.json`);
  const read = async (): Promise<Record<string, string>> => {
    try {
      const saved = JSON.parse(await readFile(file, 'utf8')) as {
        format?: unknown;
        layers?: Record<string, unknown>;
      };
      if (saved.format !== LAYER_FORMAT || !isObject(saved.layers)) return {};
      return Object.fromEntries(
        Object.entries(saved.layers).filter(
          (entry): entry is [string, string] =>
            typeof entry[1] === 'string' && /^sha256:[0-9a-f]{64}$/.test(entry[1]),
        ),
      );
    } catch {
      return {};
    }
  };
  return {
    get: async (name: string): Promise<string | undefined> => (await read())[name],
    async set(name: string, digest: string): Promise<void> {
      const layers = { ...(await read()), [name]: digest };
      await mkdir(dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, `${JSON.stringify({ format: LAYER_FORMAT, layers })}\n`);
      await rename(tmp, file);
    },
  };
}

/**
 * The disk a machine boots from: the first drive of the first boot entry when it is a system
 * disk, else the first system disk (as `imgagent --replace-self` chooses).
 */
function bootDisk(image: ImageDoc, refText: string): ImageDoc['disks'][number] {
  const first = image.boot[0]?.drives?.[0]?.disk;
  const system =
    image.disks.find((d) => d.id === first && d.use === 'system') ??
    image.disks.find((d) => d.use === 'system');
  if (!system)
    throw new ImgctlError('VALIDATION', `${refText} has no system disk to make a containerDisk of`);
  return system;
}

/** The OCI architecture of the image: `os.arch`, else its first boot entry's. */
function imageArchitecture(image: ImageDoc, refText: string): string {
  const arch = image.os?.arch ?? image.boot[0]?.arch;
  const oci = arch === undefined ? undefined : ociArchitecture(arch);
  if (oci === undefined)
    throw new ImgctlError(
      'VALIDATION',
      arch === undefined
        ? `${refText} names no architecture (os.arch or boot[].arch)`
        : `${refText} is for '${arch}', which has no OCI architecture name KubeVirt knows`,
      { hint: 'x86_64 (amd64), aarch64 (arm64), i686, ppc64le, s390x and riscv64 are known' },
    );
  return oci;
}

/** What names the imgctl image on the config's labels and the manifest's annotations. */
function annotations(
  content: ImageContent,
  disk: ImageContent['disks'][number],
): Record<string, string> {
  const { input } = content;
  return {
    ...(input.created ? { [ANNOTATION.created]: input.created } : {}),
    [ANNOTATION.title]: input.image,
    [ANNOTATION.image]: input.image,
    [ANNOTATION.revision]: String(input.revision),
    ...(input.release ? { [ANNOTATION.release]: input.release.ref } : {}),
    [ANNOTATION.diskId]: disk.id,
    [ANNOTATION.diskFormat]: disk.format,
    [DISK_SHA256]: disk.sha256,
  };
}
