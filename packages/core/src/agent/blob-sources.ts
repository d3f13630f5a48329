/**
 * Where the agent pulls a disk's blob from (docs/distribution.md, "Agents pulling from a
 * registry"): the OCI registries given with `--blob-mirror`, then the plan's `blob_mirrors` (the
 * store's), in order, and last `imgctl serve`. A registry that does not have the blob, cannot be
 * reached, refuses the credentials or serves bytes that do not match the digest is passed over
 * with a warning; the blob is verified by its sha256 whichever source it came from. Plans,
 * records and events still come from the server.
 */
import type { DownloadOptions } from '../client/client.ts';
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

/** The plan's sources, in order; the server alone when there is no mirror. */
export function mirroredDownloader(
  plan: PlanDoc,
  server: BlobDownloader,
  access: MirrorAccess | undefined,
  log: (line: string) => void,
): BlobDownloader {
  const mirrors = [...new Set([...(access?.first ?? []), ...(plan.blob_mirrors ?? [])])];
  if (access === undefined || mirrors.length === 0) return server;
  return {
    async downloadBlob(hex: string, dest: string, options: DownloadOptions = {}) {
      for (const [i, mirror] of mirrors.entries()) {
        options.signal?.throwIfAborted();
        const where = mirrorRepository(mirror, plan.image.name);
        try {
          const ref = access.parse(where);
          const pulled = await access
            .open(ref)
            .pullBlob(ref.repository, `sha256:${hex}`, undefined, dest);
          log(`sha256:${short(hex)} pulled from ${where}`);
          return { path: dest, sha256: hex, requests: 1, ...pulled };
        } catch (error) {
          if (options.signal?.aborted) throw error;
          const next =
            i + 1 < mirrors.length
              ? mirrorRepository(mirrors[i + 1]!, plan.image.name)
              : 'the server';
          log(
            `warning: sha256:${short(hex)} from ${where}: ${(error as Error).message}; trying ${next}`,
          );
        }
      }
      return server.downloadBlob(hex, dest, options);
    },
  };
}
