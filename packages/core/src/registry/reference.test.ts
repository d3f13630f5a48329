import { describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import { formatOciReference, parseOciReference } from './reference.ts';

const HEX = 'a'.repeat(64);

describe('parseOciReference', () => {
  it.each([
    ['oci://registry.example.org/images/web', 'registry.example.org', 'images/web', undefined],
    ['oci://127.0.0.1:5000/web:1.0', '127.0.0.1:5000', 'web', '1.0'],
    ['oci://Registry.Example.ORG:443/a/b/c:Tag_1', 'registry.example.org:443', 'a/b/c', 'Tag_1'],
    ['oci://[::1]:5000/x.y__z-w--v/k:latest', '[::1]:5000', 'x.y__z-w--v/k', 'latest'],
  ])('reads %s', (text, registry, repository, tag) => {
    expect(parseOciReference(text)).toEqual({ registry, repository, tag, digest: undefined });
  });

  it('reads a digest, with or without a tag', () => {
    expect(parseOciReference(`oci://h/r@sha256:${HEX}`)).toEqual({
      registry: 'h',
      repository: 'r',
      tag: undefined,
      digest: `sha256:${HEX}`,
    });
    const both = parseOciReference(`oci://h:1/r/s:v2@sha256:${HEX}`);
    expect(both.tag).toBe('v2');
    expect(both.digest).toBe(`sha256:${HEX}`);
    expect(formatOciReference(both)).toBe(`oci://h:1/r/s:v2@sha256:${HEX}`);
  });

  it.each([
    ['https://h/r', /does not start with oci:\/\//],
    ['oci://h', /names no repository/],
    ['oci:///r', /host is empty/],
    ['oci://h:0/r', /port 0 is not between/],
    ['oci://h:99999/r', /port 99999/],
    ['oci://bad_host/r', /'bad_host' is not a host/],
    ['oci://h/', /repository is empty/],
    ['oci://h/a//b', /empty component/],
    ['oci://h/Images/web', /'Images\/web' is not lowercase/],
    ['oci://h/web-', /'web-' in the repository/],
    ['oci://h/a...b', /'a...b' in the repository/],
    ['oci://h/a___b', /'a___b' in the repository/],
    ['oci://h/r:', /the tag '' is not/],
    ['oci://h/r:.x', /the tag '.x' is not/],
    [`oci://h/r:${'t'.repeat(129)}`, /the tag 't+' is not/],
    ['oci://h/r@sha256:abc', /the digest 'sha256:abc'/],
    [`oci://h/r@sha512:${HEX}`, /the digest 'sha512:/],
    [`oci://h/r@sha256:${HEX.toUpperCase()}`, /64 lowercase hex/],
    [`oci://h/${'a/'.repeat(130)}b`, /over 255 characters/],
  ])('refuses %s, saying why', (text, message) => {
    let error: unknown;
    try {
      parseOciReference(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ImgctlError);
    expect((error as ImgctlError).code).toBe('USAGE');
    expect((error as ImgctlError).message).toMatch(message);
    expect((error as ImgctlError).hint).toMatch(/oci:\/\/HOST\[:PORT\]\/REPO/);
  });
});
