import { describe, expect, it } from 'vitest';
import { parseManifest } from './import-extract.ts';
import { compressionFor, isSafeRelPath, tarHeader } from './pack.ts';

const HEX = 'a'.repeat(64);
const manifest = (change: Record<string, unknown> = {}) =>
  JSON.stringify({
    format: 'imgctl-pack/1',
    image: 'web',
    revision: 2,
    dirs: ['records'],
    files: [{ path: 'image.yaml', size: 10, sha256: HEX, mode: 0o644 }],
    blobs: [{ sha256: HEX, size: 5 }],
    ...change,
  });

describe('pack format', () => {
  it('names the compression from the suffix', () => {
    expect(compressionFor('/x/web.tar')).toBe('none');
    expect(compressionFor('web.tgz')).toBe('gzip');
    expect(compressionFor('web.tar.zst')).toBe('zstd');
    expect(() => compressionFor('web.zip')).toThrow(/cannot tell the archive format/);
  });

  it.each(['a', 'a/b.sh', 'records/default.yaml'])('%s is a safe path', (p) =>
    expect(isSafeRelPath(p)).toBe(true),
  );
  it.each([
    '',
    '/etc/passwd',
    '../x',
    'a/../b',
    'a//b',
    './a',
    'a\\b',
    'a\nb',
    `${'x'.repeat(256)}`,
  ])('%j is not a safe path', (p) => expect(isSafeRelPath(p)).toBe(false));

  it('headers are fixed: owner 0, time 0, pax only for long names', () => {
    const short = tarHeader('image/image.yaml', 'File', 10, 0o644);
    expect(short.length).toBe(512);
    expect(Number.parseInt(short.subarray(136, 148).toString(), 8)).toBe(0);
    expect(Number.parseInt(short.subarray(108, 116).toString(), 8)).toBe(0);
    expect(tarHeader(`image/${'x'.repeat(300)}`, 'File', 1, 0o644).length).toBeGreaterThan(1024);
  });

  it('accepts a manifest with every field right', () => {
    expect(parseManifest(manifest())).toMatchObject({ image: 'web', revision: 2 });
  });

  it.each([
    [{ format: 'tar' }, /format is not imgctl-pack\/1/],
    [{ image: '../x' }, /image is not a valid name/],
    [{ revision: 0 }, /revision/],
    [{ dirs: ['/abs'] }, /unsafe directory/],
    [{ files: [{ path: 'image.yaml', size: -1, sha256: HEX, mode: 420 }] }, /needs size/],
    [{ files: [{ path: 'image.yaml', size: 1, sha256: HEX, mode: 0o4755 }] }, /mode 420 or 493/],
    [{ files: [] }, /no image.yaml/],
    [
      {
        blobs: [
          { sha256: HEX, size: 1 },
          { sha256: HEX, size: 1 },
        ],
      },
      /listed twice/,
    ],
  ])('refuses %j', (change, message) => {
    expect(() => parseManifest(manifest(change))).toThrow(message);
  });
});
