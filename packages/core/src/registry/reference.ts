/**
 * `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]` references, checked against the grammar of the OCI
 * distribution spec: repository components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`,
 * tags `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, digests `sha256:` and 64 lowercase hex digits.
 */
import { ImgctlError } from '../util/errors.ts';
import type { OciReference } from './types.ts';

const SCHEME = 'oci://';
const FORM = 'oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]';
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const IPV6 = /^\[[0-9a-f:.]+\]$/;
/** what most registries accept for HOST/REPO; the spec suggests clients keep under 255 */
const MAX_NAME = 255;

function usage(text: string, problem: string): ImgctlError {
  return new ImgctlError('USAGE', `'${text.slice(0, 300)}' is not an OCI reference: ${problem}`, {
    hint: `write it as ${FORM}, e.g. oci://registry.example.org:5000/images/web:1.0`,
  });
}

/** Parses and checks an `oci://` reference; a USAGE error names what is wrong. */
export function parseOciReference(text: string): OciReference {
  if (!text.startsWith(SCHEME)) throw usage(text, `it does not start with ${SCHEME}`);
  const rest = text.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  if (slash < 0) throw usage(text, 'it names no repository after the host');
  const registry = checkRegistry(text, rest.slice(0, slash));
  let path = rest.slice(slash + 1);

  let digest: string | undefined;
  const at = path.indexOf('@');
  if (at >= 0) {
    digest = path.slice(at + 1);
    path = path.slice(0, at);
    if (!DIGEST.test(digest))
      throw usage(text, `the digest '${digest.slice(0, 80)}' is not sha256: and 64 lowercase hex`);
  }
  let tag: string | undefined;
  const colon = path.lastIndexOf(':');
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag))
      throw usage(
        text,
        `the tag '${tag.slice(0, 140)}' is not 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)`,
      );
  }
  return { registry, repository: checkRepository(text, path), tag, digest };
}

function checkRegistry(text: string, host: string): string {
  if (host === '') throw usage(text, 'the host is empty');
  const match = /^(.*?)(?::(\d+))?$/.exec(host)!;
  const name = match[1]!.toLowerCase();
  const port = match[2];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535))
    throw usage(text, `the port ${port} is not between 1 and 65535`);
  const valid = IPV6.test(name) || name.split('.').every((label) => HOST_LABEL.test(label));
  if (!valid) throw usage(text, `'${host.slice(0, 100)}' is not a host name or address`);
  return port === undefined ? name : `${name}:${port}`;
}

function checkRepository(text: string, path: string): string {
  if (path === '') throw usage(text, 'the repository is empty');
  if (path.length + 1 > MAX_NAME)
    throw usage(text, `the repository is over ${MAX_NAME} characters`);
  for (const component of path.split('/')) {
    if (component === '') throw usage(text, `the repository '${path}' has an empty component`);
    if (component !== component.toLowerCase())
      throw usage(text, `the repository '${path}' is not lowercase`);
    if (!COMPONENT.test(component))
      throw usage(
        text,
        `'${component}' in the repository is not lowercase letters and digits separated by ., _, __ or dashes`,
      );
  }
  return path;
}

/** The reference written back as `oci://HOST/REPO[:TAG][@DIGEST]`. */
export function formatOciReference(ref: OciReference): string {
  return `${SCHEME}${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** A manifest reference for `/v2/<repo>/manifests/<reference>`: the digest, else the tag, else `latest`. */
export function manifestReference(ref: OciReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** Checks a tag or a digest given for a manifest; a USAGE error otherwise. */
export function checkManifestReference(reference: string): void {
  if (!TAG.test(reference) && !DIGEST.test(reference))
    throw new ImgctlError(
      'USAGE',
      `'${reference.slice(0, 140)}' is neither a tag nor a sha256 digest of a manifest`,
    );
}

/** Checks a repository given to a Registry call (as `parseOciReference` would). */
export function checkRepositoryName(repository: string): void {
  checkRepository(`oci://…/${repository}`, repository);
}

/** Checks a blob digest given to a Registry call. */
export function checkDigest(digest: string): void {
  if (!DIGEST.test(digest))
    throw new ImgctlError(
      'USAGE',
      `'${digest.slice(0, 80)}' is not a sha256 digest (sha256: and 64 lowercase hex)`,
    );
}
