/**
 * What the OCI registry client (registry.ts) offers the rest of core: `imgctl push` and
 * `imgctl import oci://…` (disks/) and agents pulling disks from a registry (agent/). The
 * registry speaks the OCI distribution spec; our disks are already named by their sha256, which
 * is what a registry names a blob by, so a disk's layer digest is `sha256:<the disk's sha256>`.
 */
import type { Readable } from 'node:stream';

/** `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`, parsed (reference.ts). */
export interface OciReference {
  /** HOST[:PORT], as written (lowercase) */
  registry: string;
  /** the repository path: lowercase components joined by `/` */
  repository: string;
  tag?: string;
  /** `sha256:<64 hex>` */
  digest?: string;
}

/** A content descriptor of the OCI image spec. */
export interface OciDescriptor {
  mediaType: string;
  /** `sha256:<64 hex>` */
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
}

export interface RegistryOptions {
  /**
   * A credentials file as container tools write it (`{"auths": {"HOST": {"auth": base64(user:pass)}}}`):
   * `--registry-auth FILE`, else `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json` when it exists.
   */
  authFile?: string;
  /** PEM CA bundle the registry's certificate is checked against (besides the system's) */
  caFile?: string;
  /** plain http:// — only when asked (`--insecure-http`) */
  insecureHttp?: boolean;
  /** how long a new connection (TCP and TLS) may take (default 30 s) */
  connectTimeoutMs?: number;
  /** upload chunk size in bytes (default 64 MiB) */
  chunkSize?: number;
  /**
   * A directory where the newest upload `Location` of each unfinished blob is kept (one 0600 file
   * per registry, repository and digest), so that a later push — after a kill — resumes it from
   * the registry's offset. Without it, an upload resumes only within one Registry.
   */
  uploadStateDir?: string;
  /** stops everything at once: a PATCH cut in the middle may cost its upload session */
  signal?: AbortSignal;
  /**
   * Stops an upload between two chunks: the chunk in flight is finished and its `Location`
   * kept, so the next push resumes from there (Ctrl-C; `signal` stops at once).
   */
  windDown?: AbortSignal;
  /** progress and retries, one line each (`retrying PATCH …: 500, in 1 s`) */
  log?: (line: string) => void;
  /** bytes moved so far of the current blob */
  onProgress?: (done: number, total: number) => void;
}

/** Where a blob's bytes come from for an upload: opened again at an offset to resume. */
export interface BlobSource {
  digest: string;
  size: number;
  open(offset: number): Readable;
}

export interface PushedBlob {
  digest: string;
  /** how it got there: the registry had it (HEAD), a cross-repository mount, or bytes sent */
  how: 'present' | 'mounted' | 'uploaded';
  /** bytes sent (0 unless uploaded; less than size when an upload was resumed) */
  sentBytes: number;
}

export interface Manifest {
  mediaType: string;
  /** the bytes as served: their sha256 is the digest */
  bytes: Buffer;
  digest: string;
}

/**
 * A registry, authenticated as its challenges ask (bearer token from the realm it names, or
 * basic), retrying 429/5xx with backoff, refusing redirects to another host, every error an
 * ImgctlError (NOT_FOUND, INTEGRITY, CONFLICT for a refused manifest, FAILED for the rest).
 */
export interface Registry {
  hasBlob(repository: string, digest: string): Promise<boolean>;
  /**
   * Skips a blob the registry has, mounts it from `mountFrom` repositories of the same registry
   * when allowed, else uploads it in chunks (resuming from the offset the registry reports).
   */
  pushBlob(
    repository: string,
    source: BlobSource,
    options?: { mountFrom?: string[] },
  ): Promise<PushedBlob>;
  /** The blob's bytes from `offset` (a Range GET), not verified: the caller hashes them. */
  openBlob(repository: string, digest: string, offset?: number): Promise<Readable>;
  /**
   * Downloads a blob to `dest` (resuming a partial `dest` with Range), checked against its
   * digest; a mismatch removes `dest` and throws INTEGRITY. `size` when the caller knows it (a
   * manifest's descriptor: checked too); undefined (an agent knows only the sha256): the
   * registry's Content-Length.
   */
  pullBlob(
    repository: string,
    digest: string,
    size: number | undefined,
    dest: string,
  ): Promise<{ size: number; resumedBytes: number }>;
  /**
   * PUTs a manifest under a tag or its digest; returns its digest. A manifest with a `subject`
   * that the registry does not index (no `OCI-Subject` header in its answer) is also added to the
   * `sha256-<hex>` tag fallback index, so `referrers` finds it on any registry.
   */
  putManifest(
    repository: string,
    reference: string,
    manifest: { mediaType: string; bytes: Buffer },
  ): Promise<string>;
  /** GETs a manifest (at most 4 MiB; its digest checked when `reference` is one). */
  getManifest(repository: string, reference: string, accept: string[]): Promise<Manifest>;
  /**
   * The manifests whose `subject` is `digest`: the referrers API, else the `sha256-<hex>` tag
   * fallback index of the distribution spec.
   */
  referrers(repository: string, digest: string, artifactType?: string): Promise<OciDescriptor[]>;
}
