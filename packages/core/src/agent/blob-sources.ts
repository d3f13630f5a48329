/**
 * Where the agent pulls a disk's blob from (docs/distribution.md, "Agents pulling from a
 * registry"): the OCI registries given with `--blob-mirror`, then the plan's `blob_mirrors` (the
 * store's), in order, and last `imgctl serve`. A registry that does not have the blob, cannot be
 * reached, refuses the credentials or serves bytes that do not match the digest is passed over
 * with a warning; the blob is verified by its sha256 whichever source it came from. A disk that
 * was pushed in segments has no blob of its sha256: its disk index (disks/oci-disk-index.ts)
 * lists the segments, pulled in order. Plans, records and events still come from the server.
 */
import { createHash } from 'node:crypto';
import type {
  BlobSink,
  Client,
  DownloadOptions,
  DownloadResult,
  StreamResult,
} from '../client/client.ts';
import { open, rename, rm } from 'node:fs/promises';
import { writeFully } from '../disks/blobs.ts';
import { type DiskPart, diskIndexTag, parseDiskIndex } from '../disks/oci-disk-index.ts';
import { OCI_MANIFEST } from '../registry/registry.ts';
import { ImgctlError } from '../util/errors.ts';
import type { OciReference, Registry } from '../registry/types.ts';
import type { PlanDoc } from '../store/types.ts';
import type { BlobDownloader } from './blob-cache.ts';
import { short } from './steps.ts';

/** How the agent reaches registries: made by the binary from its --registry-* flags. */
export interface MirrorAccess {
  /** --blob-mirror, tried before the plan's */
  first: string[];
  /** parses `oci://HOST[:PORT]/REPO` (registry/reference.ts) */
  parse(text: string): OciReference;
  open(reference: OciReference): Registry;
}

/**
 * The repository that holds `image`'s disks under a mirror: `{image}` replaced by the image's
 * name, else the name appended as the last path component.
 */
export function mirrorRepository(mirror: string, image: string): string {
  const trimmed = mirror.replace(/\/+$/, '');
  return trimmed.includes('{image}') ? trimmed.replaceAll('{image}', image) : `${trimmed}/${image}`;
}

/** What the server offers a disk's bytes through: into a file, or streamed to a target. */
export type BlobServer = BlobDownloader & Partial<Pick<Client, 'streamBlob'>>;

/**
 * The plan's sources, in order, for both ways a disk is pulled; the server alone when there is
 * no mirror. A stream from a registry is hashed as it goes: a mismatch, or a registry failing
 * after some bytes were written, makes the next source write the disk again from offset 0.
 */
export function mirroredDownloader<T extends BlobServer>(
  plan: PlanDoc,
  server: T,
  access: MirrorAccess | undefined,
  log: (line: string) => void,
): T {
  const mirrors = [...new Set([...(access?.first ?? []), ...(plan.blob_mirrors ?? [])])];
  if (access === undefined || mirrors.length === 0) return server;
  /** tries each mirror with `pull`, the server last */
  async function first<R>(
    hex: string,
    options: DownloadOptions,
    pull: (registry: Registry, repository: string) => Promise<R>,
    fromServer: () => Promise<R>,
  ): Promise<R> {
    for (const [i, mirror] of mirrors.entries()) {
      options.signal?.throwIfAborted();
      const where = mirrorRepository(mirror, plan.image.name);
      try {
        const ref = access!.parse(where);
        const result = await pull(access!.open(ref), ref.repository);
        log(`sha256:${short(hex)} pulled from ${where}`);
        return result;
      } catch (error) {
        if (options.signal?.aborted || final.has(error as Error)) throw error;
        const next =
          i + 1 < mirrors.length
            ? mirrorRepository(mirrors[i + 1]!, plan.image.name)
            : 'the server';
        log(
          `warning: sha256:${short(hex)} from ${where}: ${(error as Error).message}; trying ${next}`,
        );
      }
    }
    return fromServer();
  }
  return {
    ...server,
    downloadBlob: (hex: string, dest: string, options: DownloadOptions = {}) =>
      first(
        hex,
        options,
        async (registry, repository) => {
          try {
            const pulled = await registry.pullBlob(repository, `sha256:${hex}`, undefined, dest);
            return { path: dest, sha256: hex, requests: 1, ...pulled };
          } catch (error) {
            // the next source must not resume bytes this one served
            await rm(`${dest}.partial`, { force: true });
            if (!isNotFound(error)) throw error;
            const parts = await diskIndex(registry, repository, hex, log);
            return downloadParts(registry, repository, hex, parts, dest, options);
          }
        },
        () => server.downloadBlob(hex, dest, options),
      ),
    ...(server.streamBlob
      ? {
          streamBlob: (hex: string, sink: BlobSink, options: DownloadOptions = {}) =>
            first(
              hex,
              options,
              async (registry, repository) => {
                const parts = (await registry.hasBlob(repository, `sha256:${hex}`))
                  ? [{ digest: `sha256:${hex}` }]
                  : await allThere(
                      registry,
                      repository,
                      hex,
                      await diskIndex(registry, repository, hex, log),
                    );
                return streamFrom(registry, repository, hex, parts, sink, options);
              },
              () => server.streamBlob!(hex, sink, options),
            ),
        }
      : {}),
  };
}

const isNotFound = (error: unknown) => error instanceof ImgctlError && error.code === 'NOT_FOUND';

/** The segments of the segmented disk `hex` from its disk index; NOT_FOUND without one. */
async function diskIndex(
  registry: Registry,
  repository: string,
  hex: string,
  log: (line: string) => void,
): Promise<DiskPart[]> {
  let manifest;
  try {
    manifest = await registry.getManifest(repository, diskIndexTag(hex), [OCI_MANIFEST]);
  } catch (error) {
    if (!isNotFound(error)) throw error;
    throw new ImgctlError(
      'NOT_FOUND',
      `${repository} has neither the blob sha256:${short(hex)} nor its disk index`,
      { cause: error },
    );
  }
  const parts = parseDiskIndex(manifest.bytes, hex, repository);
  log(`sha256:${short(hex)} is in ${parts.length} segments in ${repository}`);
  return parts;
}

/**
 * A segmented disk into `<dest>.partial` through streamFrom, fsynced and renamed to `dest` once
 * whole and checked. It starts from 0: segments are not resumed across runs.
 */
async function downloadParts(
  registry: Registry,
  repository: string,
  hex: string,
  parts: DiskPart[],
  dest: string,
  options: DownloadOptions,
): Promise<DownloadResult> {
  const partial = `${dest}.partial`;
  const handle = await open(partial, 'w', 0o644);
  let result: StreamResult;
  try {
    const sink: BlobSink = {
      write: (data, offset) => writeFully(handle, data, 0, data.length, offset),
    };
    result = await streamFrom(registry, repository, hex, parts, sink, options);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(partial, { force: true });
    // a file is not a target that skips zeros: the next source may write it again
    final.delete(error as Error);
    throw error;
  }
  await handle.close();
  await rename(partial, dest);
  return { path: dest, resumedBytes: 0, ...result };
}

const OTHER_BYTES_HINT =
  'that registry serves other bytes under this digest: take it out of blob_mirrors and --blob-mirror';

/**
 * The segments of a disk to be streamed onto a target, once the registry has every one (HEAD):
 * a missing one is NOT_FOUND before the first byte is written, so the next source writes the
 * disk instead of the stream failing for good half-way.
 */
async function allThere(
  registry: Registry,
  repository: string,
  hex: string,
  parts: DiskPart[],
): Promise<DiskPart[]> {
  for (const [i, part] of parts.entries())
    if (!(await registry.hasBlob(repository, part.digest)))
      throw new ImgctlError(
        'NOT_FOUND',
        `${repository}: segment ${i + 1}/${parts.length} (${part.digest.slice(0, 19)}) of disk sha256:${short(hex)} is not there`,
      );
  return parts;
}

/** Failures after a stream wrote bytes: no other source may write over them (streamFrom). */
const final = new WeakSet<Error>();

/**
 * A registry's blob (or a segmented disk's segments, in order) into `sink` from offset 0, hashed
 * on the way; each segment is checked against its digest and size, and the whole against `hex`.
 * Once bytes are written a failure is final (FAILED, or INTEGRITY for other bytes): the target
 * may skip zero blocks, so another source writing again from 0 would leave this one's bytes
 * where the image is zero.
 */
async function streamFrom(
  registry: Registry,
  repository: string,
  hex: string,
  parts: Array<{ digest: string; size?: number }>,
  sink: BlobSink,
  options: DownloadOptions,
): Promise<StreamResult> {
  const hash = createHash('sha256');
  let offset = 0;
  const finalError = (error: ImgctlError) => {
    final.add(error);
    return error;
  };
  for (const part of parts) {
    const start = offset;
    const partHash = parts.length > 1 ? createHash('sha256') : undefined;
    const body = await registry.openBlob(repository, part.digest, 0).catch((error: unknown) => {
      if (offset === 0) throw error;
      throw finalError(
        new ImgctlError('FAILED', `${repository}: ${(error as Error).message}`, { cause: error }),
      );
    });
    const stop = () => body.destroy();
    options.signal?.addEventListener('abort', stop, { once: true });
    /** the segment went past the size its index gives: nothing of it is written past there */
    let overlong = false;
    try {
      for await (const chunk of body) {
        const data = chunk as Buffer;
        if (part.size !== undefined && offset - start + data.length > part.size) {
          overlong = true;
          break;
        }
        hash.update(data);
        partHash?.update(data);
        await sink.write(data, offset);
        offset += data.length;
        options.onProgress?.({ bytes: offset });
      }
    } catch (error) {
      if (offset === 0) throw error;
      throw finalError(
        new ImgctlError(
          'FAILED',
          `${repository}: the blob stopped after ${offset} bytes: ${(error as Error).message}`,
          {
            cause: error,
            hint: 'run again: the disk is written from the start',
          },
        ),
      );
    } finally {
      options.signal?.removeEventListener('abort', stop);
    }
    const got = partHash && `sha256:${partHash.digest('hex')}`;
    if (
      overlong ||
      (got !== undefined && got !== part.digest) ||
      (part.size ?? offset - start) !== offset - start
    ) {
      const error = new ImgctlError(
        'INTEGRITY',
        `${repository}: the segment ${part.digest.slice(0, 19)} of disk sha256:${short(hex)} holds other bytes (${overlong ? `more than its ${part.size}` : `${offset - start} bytes, ${got}`})`,
        { hint: OTHER_BYTES_HINT },
      );
      throw offset === 0 ? error : finalError(error);
    }
  }
  const got = hash.digest('hex');
  if (got !== hex)
    throw finalError(
      new ImgctlError(
        'INTEGRITY',
        `${repository}: the blob sha256:${short(hex)} has sha256 ${got}`,
        { hint: OTHER_BYTES_HINT },
      ),
    );
  return { size: offset, sha256: hex, requests: parts.length };
}
