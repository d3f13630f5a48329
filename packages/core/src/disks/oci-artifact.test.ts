import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  type ArtifactInput,
  buildImageArtifact,
  IMAGE_ARTIFACT,
  IMAGE_CONFIG,
  parseImageConfig,
  parseImageManifest,
} from './oci-artifact.ts';

const hex = (text: string) => createHash('sha256').update(text).digest('hex');
const ROOT = hex('root');
const IMAGE_YAML = 'apiVersion: imgctl/v1\nkind: Image\nname: web\nrevision: 3\n';

function input(change: Partial<ArtifactInput> = {}): ArtifactInput {
  return {
    image: 'web',
    revision: 3,
    dirs: ['records'],
    files: [
      { path: 'image.yaml', mode: 0o644, bytes: Buffer.from(IMAGE_YAML) },
      {
        path: 'records/default.yaml',
        mode: 0o644,
        bytes: Buffer.from('kind: ImageRecord\nname: default\nimage: web\n'),
      },
      { path: 'provision.sh', mode: 0o755, bytes: Buffer.from('#!/bin/sh\n') },
      { path: 'logo.bin', mode: 0o644, bytes: Buffer.from([0xff, 0xfe, 0x00]) },
    ],
    disks: [
      {
        id: 'root',
        use: 'system',
        format: 'qcow2',
        size: 4,
        sha256: ROOT,
        segments: [{ digest: `sha256:${ROOT}`, size: 4 }],
      },
    ],
    ...change,
  };
}

type Json = Record<string, unknown> & {
  layers: Array<Record<string, unknown>>;
  files: Array<Record<string, unknown>>;
  disks: Array<Record<string, unknown>>;
};
const json = (bytes: Buffer) => JSON.parse(bytes.toString()) as Json;
const bytesOf = (value: unknown) => Buffer.from(JSON.stringify(value));

/** Parses a built artifact after `change` edited its manifest and config. */
function parseEdited(change: (manifest: Json, config: Json) => void) {
  const built = buildImageArtifact(input());
  const manifest = json(built.manifest.bytes);
  const config = json(built.config.bytes);
  change(manifest, config);
  return parseImageConfig(bytesOf(config), parseImageManifest(bytesOf(manifest)));
}

describe('the image artifact', () => {
  it('is an OCI manifest of our artifactType whose layer is the disk by its sha256', () => {
    const built = buildImageArtifact(input({ created: '2026-12-05T09:30:00.000Z' }));
    const manifest = json(built.manifest.bytes);
    expect(manifest).toMatchObject({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: IMAGE_ARTIFACT,
      config: { mediaType: IMAGE_CONFIG, digest: built.config.digest },
      annotations: {
        'org.opencontainers.image.created': '2026-12-05T09:30:00.000Z',
        'dev.imgctl.image.name': 'web',
        'dev.imgctl.image.revision': '3',
      },
    });
    expect(manifest.layers).toEqual([
      {
        mediaType: 'application/vnd.imgctl.disk.v1.qcow2',
        digest: `sha256:${ROOT}`,
        size: 4,
        annotations: {
          'org.opencontainers.image.title': 'root.qcow2',
          'dev.imgctl.disk.id': 'root',
          'dev.imgctl.disk.format': 'qcow2',
        },
      },
    ]);
    const config = json(built.config.bytes);
    expect(config.descriptor).toEqual({
      apiVersion: 'imgctl/v1',
      kind: 'Image',
      name: 'web',
      revision: 3,
    });
    expect(config.files.map((f) => [f.path, f.encoding])).toEqual([
      ['image.yaml', 'utf-8'],
      ['logo.bin', 'base64'],
      ['provision.sh', 'utf-8'],
      ['records/default.yaml', 'utf-8'],
    ]);
  });

  it('is the same bytes for the same input, whatever order the files were read in', () => {
    const a = buildImageArtifact(input());
    const b = buildImageArtifact(input({ files: [...input().files].reverse() }));
    expect(b.manifest.bytes.equals(a.manifest.bytes)).toBe(true);
    expect(b.config.digest).toBe(a.config.digest);
  });

  it('refuses a manifest over 4 MiB', () => {
    const segments = Array.from({ length: 14_000 }, (_, i) => ({
      digest: `sha256:${hex(String(i))}`,
      size: 1,
    }));
    const disks = [{ ...input().disks[0]!, size: 14_000, segments }];
    expect(() => buildImageArtifact(input({ disks }))).toThrow(/over the 4 MiB/);
  });

  it('parses back what it built', () => {
    const built = buildImageArtifact(input());
    const parsed = parseImageConfig(built.config.bytes, parseImageManifest(built.manifest.bytes));
    expect(parsed.blobs).toEqual([{ sha256: ROOT, size: 4 }]);
    expect(parsed.contents.get('logo.bin')).toEqual(Buffer.from([0xff, 0xfe, 0x00]));
  });

  it('keeps a disk and the same bytes as a segment of another disk apart: two layer types', () => {
    const zeros = `sha256:${hex('zeros')}`;
    const disks: ArtifactInput['disks'] = [
      {
        id: 'root',
        use: 'system',
        format: 'raw',
        size: 8,
        sha256: hex('root+zeros'),
        segments: [
          { digest: `sha256:${ROOT}`, size: 4 },
          { digest: zeros, size: 4 },
        ],
      },
      {
        id: 'data',
        use: 'data',
        format: 'raw',
        size: 4,
        sha256: hex('zeros'),
        segments: [{ digest: zeros, size: 4 }],
      },
    ];
    const built = buildImageArtifact(input({ disks }));
    expect(json(built.manifest.bytes).layers.map((l) => [l.digest, l.mediaType])).toEqual([
      [`sha256:${ROOT}`, 'application/vnd.imgctl.disk.v1.raw.segment'],
      [zeros, 'application/vnd.imgctl.disk.v1.raw.segment'],
      [zeros, 'application/vnd.imgctl.disk.v1.raw'],
    ]);
    const parsed = parseImageConfig(built.config.bytes, parseImageManifest(built.manifest.bytes));
    expect(parsed.blobs.map((b) => b.size)).toEqual([8, 4]);
  });

  it.each<[string, (m: Json, c: Json) => void, RegExp]>([
    ['another artifactType', (m) => (m.artifactType = 'x/y'), /not an imgctl image/],
    ['a digest not sha256', (m) => (m.layers[0]!.digest = 'md5:abc'), /is not sha256/],
    ['a config over 16 MiB', (m) => ((m.config as Json).size = 2 ** 30), /config declares/],
    ['a layer of another type', (m) => (m.layers[0]!.mediaType = 'a/b'), /not a disk/],
    ['an unsafe path', (_, c) => (c.files[1]!.path = '../etc/passwd'), /unsafe file path/],
    ['an absolute directory', (_, c) => (c.dirs = ['/etc']), /unsafe directory/],
    ['a bad image name', (_, c) => (c.image = '../x'), /image is not a valid name/],
    ['a descriptor not image.yaml', (_, c) => (c.descriptor = { name: 'x' }), /descriptor/],
    ['a record not its file', (_, c) => (c.records = {}), /records does not list/],
    ['a size not an integer', (_, c) => (c.disks[0]!.size = 1.5), /needs size/],
    [
      'layers not adding up',
      (m, c) => {
        m.layers[0]!.size = 3;
        c.disks[0]!.size = 4;
      },
      /add up to 3 bytes, not 4/,
    ],
    [
      'a layer not named by its disk',
      (m, c) => {
        m.layers[0]!.digest = `sha256:${hex('other')}`;
        c.disks[0]!.layers = [`sha256:${hex('other')}`];
      },
      /not named by the disk's sha256/,
    ],
    [
      'a layer no disk uses',
      (m) => m.layers.push({ ...m.layers[0]!, digest: `sha256:${hex('x')}` }),
      /belongs to no disk/,
    ],
  ])('refuses %s', (_, change, message) => {
    expect(() => parseEdited(change)).toThrow(message);
  });

  it('refuses a file whose content is not its sha256 as INTEGRITY', () => {
    expect(() => parseEdited((_, c) => (c.files[2]!.content = '#!/bin/bash\n'))).toThrowError(
      expect.objectContaining({ code: 'INTEGRITY' }) as Error,
    );
  });
});
