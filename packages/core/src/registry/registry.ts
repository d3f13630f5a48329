/**
 * The registry client: `openRegistry(ref, options)` gives the Registry of types.ts for the
 * registry `ref` names. Blobs are pushed by upload.ts and pulled by download.ts; manifests and
 * referrers are here. Every error is an ImgctlError (auth problems USAGE, a manifest over
 * 4 MiB VALIDATION, a manifest the registry refuses CONFLICT, a digest that does not match
 * INTEGRITY, a missing thing NOT_FOUND, the rest FAILED); an abort rejects with the signal's
 * reason.
 */
import { createHash } from 'node:crypto';
import { ImgctlError } from '../util/errors.ts';
import { findCredentials } from './auth.ts';
import { makeAuthenticator } from './auth.ts';
import { openBlob, pullBlob } from './download.ts';
import { drain, makeHttp, readBody } from './http.ts';
import { checkDigest, checkManifestReference, checkRepositoryName, DIGEST } from './reference.ts';
import { makeTransport, type Transport } from './transport.ts';
import type { Manifest, OciDescriptor, OciReference, Registry, RegistryOptions } from './types.ts';
import { makeSessionStore, pushBlob } from './upload.ts';

/** The most a manifest may weigh, both ways (distribution answers 400 MANIFEST_INVALID above). */
export const MAX_MANIFEST = 4 * 1024 * 1024;
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** The OCI digest of bytes held in memory (a manifest, a config): `sha256:<hex>`. */
export const digestOf = (bytes: Buffer) =>
  `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const pull = (repository: string) => `repository:${repository}:pull`;
const push = (repository: string) => `repository:${repository}:pull,push`;

function tooBig(what: string, size: number | string): ImgctlError {
  return new ImgctlError(
    'VALIDATION',
    `${what}: the manifest is ${size} bytes, over the ${MAX_MANIFEST} (4 MiB) registries accept`,
  );
}

/** The tag the referrers fallback keeps `digest`'s referrers under: `sha256-<hex>`. */
export function referrersTag(digest: string): string {
  return digest.replace(':', '-').slice(0, 128);
}

export function openRegistry(ref: OciReference, options: RegistryOptions = {}): Registry {
  const http = makeHttp(ref.registry, options);
  const auth = makeAuthenticator(
    http,
    ref.registry,
    () => findCredentials(ref.registry, ref.repository, { authFile: options.authFile }),
    options,
  );
  const transport = makeTransport(http, auth, ref.registry, options);
  const sessions = makeSessionStore(ref.registry, options.uploadStateDir);

  const hasBlob = async (repository: string, digest: string) => {
    checkRepositoryName(repository);
    checkDigest(digest);
    const response = await transport.request({
      method: 'HEAD',
      url: `/v2/${repository}/blobs/${digest}`,
      scope: pull(repository),
      what: `HEAD blob ${digest.slice(0, 19)} in ${repository}`,
      // a registry whose blobs are served from elsewhere redirects: it has the blob
      expect: [404, 301, 302, 303, 307, 308],
    });
    drain(response.res);
    return response.status !== 404;
  };

  const getManifest = async (repository: string, reference: string, accept: string[]) => {
    checkRepositoryName(repository);
    checkManifestReference(reference);
    const what = `GET manifest ${repository}:${reference}`;
    const response = await transport.request({
      method: 'GET',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { accept: accept.join(', ') },
      scope: pull(repository),
      what,
    });
    const bytes = await readBody(response.res, MAX_MANIFEST, () =>
      tooBig(what, response.header('content-length') ?? `over ${MAX_MANIFEST}`),
    );
    const digest = digestOf(bytes);
    if (DIGEST.test(reference) && digest !== reference)
      throw new ImgctlError(
        'INTEGRITY',
        `${what}: the registry sent a manifest whose digest is ${digest}`,
      );
    const said = response.header('docker-content-digest');
    if (said?.startsWith('sha256:') && said !== digest)
      throw new ImgctlError(
        'INTEGRITY',
        `${what}: the registry says its digest is ${said}, its bytes hash to ${digest}`,
      );
    return { mediaType: mediaTypeOf(bytes, response.header('content-type')), bytes, digest };
  };

  const putManifest = async (
    repository: string,
    reference: string,
    manifest: { mediaType: string; bytes: Buffer },
  ): Promise<string> => {
    checkRepositoryName(repository);
    checkManifestReference(reference);
    const what = `PUT manifest ${repository}:${reference}`;
    if (manifest.bytes.length > MAX_MANIFEST) throw tooBig(what, manifest.bytes.length);
    const digest = digestOf(manifest.bytes);
    if (DIGEST.test(reference) && reference !== digest)
      throw new ImgctlError('USAGE', `${what}: the manifest's digest is ${digest}`);
    const response = await transport.request({
      method: 'PUT',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { 'content-type': manifest.mediaType },
      body: manifest.bytes,
      scope: push(repository),
      what,
      refusedCode: 'CONFLICT',
    });
    drain(response.res);
    const said = response.header('docker-content-digest');
    if (said?.startsWith('sha256:') && said !== digest)
      throw new ImgctlError(
        'INTEGRITY',
        `${what}: the registry stored it as ${said}, not ${digest}`,
      );
    const subject = subjectOf(manifest.bytes);
    if (subject !== undefined && response.header('oci-subject') === undefined)
      await addToReferrersTag(transport, getManifest, repository, subject, {
        ...describeManifest(manifest.bytes, manifest.mediaType),
        digest,
        size: manifest.bytes.length,
      });
    return digest;
  };

  return {
    hasBlob,
    pushBlob: (repository, source, pushOptions) => {
      checkRepositoryName(repository);
      checkDigest(source.digest);
      for (const from of pushOptions?.mountFrom ?? []) checkRepositoryName(from);
      return pushBlob(
        { transport, sessions, options, hasBlob },
        repository,
        source,
        pushOptions?.mountFrom,
      );
    },
    openBlob: (repository, digest, offset) => {
      checkRepositoryName(repository);
      checkDigest(digest);
      return openBlob(transport, repository, digest, offset);
    },
    pullBlob: (repository, digest, size, dest) => {
      checkRepositoryName(repository);
      checkDigest(digest);
      return pullBlob(transport, options, repository, digest, size, dest);
    },
    putManifest,
    getManifest,
    referrers: (repository, digest, artifactType) =>
      referrers(transport, getManifest, repository, digest, artifactType),
  };
}

/** The manifest's own `mediaType` field, else the Content-Type it was served with. */
function mediaTypeOf(bytes: Buffer, contentType: string | undefined): string {
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
    if (typeof parsed.mediaType === 'string') return parsed.mediaType;
  } catch {
    // not JSON: the caller's parser will say so
  }
  return contentType?.split(';')[0]!.trim() ?? '';
}

function subjectOf(bytes: Buffer): string | undefined {
  try {
    const digest = (JSON.parse(bytes.toString('utf8')) as { subject?: { digest?: unknown } })
      .subject?.digest;
    return typeof digest === 'string' && DIGEST.test(digest) ? digest : undefined;
  } catch {
    return undefined;
  }
}

/** A referrer's descriptor as the referrers API lists it: its artifactType and annotations. */
function describeManifest(
  bytes: Buffer,
  mediaType: string,
): Omit<OciDescriptor, 'digest' | 'size'> {
  const parsed = JSON.parse(bytes.toString('utf8')) as {
    artifactType?: unknown;
    config?: { mediaType?: unknown };
    annotations?: Record<string, string>;
  };
  const artifactType =
    typeof parsed.artifactType === 'string'
      ? parsed.artifactType
      : typeof parsed.config?.mediaType === 'string'
        ? parsed.config.mediaType
        : undefined;
  return {
    mediaType,
    ...(artifactType ? { artifactType } : {}),
    ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
  };
}

type GetManifest = (repository: string, reference: string, accept: string[]) => Promise<Manifest>;

/** The descriptors of an image index (`manifests`), checked to be descriptors. */
function indexManifests(bytes: Buffer, what: string): OciDescriptor[] {
  let parsed: { manifests?: unknown };
  try {
    parsed = JSON.parse(bytes.toString('utf8')) as { manifests?: unknown };
  } catch {
    throw new ImgctlError('FAILED', `${what}: the registry sent something not JSON`);
  }
  const list = parsed.manifests ?? [];
  if (!Array.isArray(list)) throw new ImgctlError('FAILED', `${what}: "manifests" is not a list`);
  return list.filter(
    (d): d is OciDescriptor =>
      typeof d?.mediaType === 'string' &&
      typeof d.digest === 'string' &&
      DIGEST.test(d.digest) &&
      Number.isSafeInteger(d.size),
  );
}

/** The referrers API, else (404: distribution 2.8 and older registries) the tag fallback. */
async function referrers(
  transport: Transport,
  getManifest: GetManifest,
  repository: string,
  digest: string,
  artifactType?: string,
): Promise<OciDescriptor[]> {
  checkRepositoryName(repository);
  checkDigest(digest);
  const what = `GET referrers of ${digest.slice(0, 19)} in ${repository}`;
  const query = artifactType ? `?${new URLSearchParams({ artifactType })}` : '';
  const response = await transport.request({
    method: 'GET',
    url: `/v2/${repository}/referrers/${digest}${query}`,
    headers: { accept: OCI_INDEX },
    scope: pull(repository),
    what,
    expect: [404],
  });
  let list: OciDescriptor[];
  let filtered = false;
  if (response.status === 404) {
    drain(response.res);
    list = await fallbackIndex(getManifest, repository, digest);
  } else {
    const bytes = await readBody(response.res, MAX_MANIFEST, () => tooBig(what, 'over 4 MiB'));
    list = indexManifests(bytes, what);
    filtered = (response.header('oci-filters-applied') ?? '').split(',').includes('artifactType');
  }
  return artifactType && !filtered ? list.filter((d) => d.artifactType === artifactType) : list;
}

/** The descriptors in the `sha256-<hex>` tag's index; none when there is no such tag. */
async function fallbackIndex(
  getManifest: GetManifest,
  repository: string,
  digest: string,
): Promise<OciDescriptor[]> {
  try {
    const index = await getManifest(repository, referrersTag(digest), [OCI_INDEX]);
    return indexManifests(index.bytes, `GET ${repository}:${referrersTag(digest)}`);
  } catch (error) {
    if (error instanceof ImgctlError && error.code === 'NOT_FOUND') return [];
    throw error;
  }
}

/** Adds a referrer to the `sha256-<hex>` tag's index (made when missing), as the spec asks. */
async function addToReferrersTag(
  transport: Transport,
  getManifest: GetManifest,
  repository: string,
  subject: string,
  descriptor: OciDescriptor,
): Promise<void> {
  const tag = referrersTag(subject);
  const list = await fallbackIndex(getManifest, repository, subject);
  if (list.some((d) => d.digest === descriptor.digest)) return;
  const bytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...list, descriptor] }),
  );
  if (bytes.length > MAX_MANIFEST) throw tooBig(`PUT manifest ${repository}:${tag}`, bytes.length);
  const response = await transport.request({
    method: 'PUT',
    url: `/v2/${repository}/manifests/${tag}`,
    headers: { 'content-type': OCI_INDEX },
    body: bytes,
    scope: push(repository),
    what: `PUT referrers index ${repository}:${tag}`,
    refusedCode: 'CONFLICT',
  });
  drain(response.res);
}
