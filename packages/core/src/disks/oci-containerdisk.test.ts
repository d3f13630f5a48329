import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { containerDisk, ociArchitecture } from './oci-containerdisk.ts';

describe('containerDisk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'containerdisk-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('is one tar layer of disk/<file> owned by 107:107, digests fixed by the content', async () => {
    const disk = join(dir, 'root.qcow2');
    const content = randomBytes(5000);
    await writeFile(disk, content);
    const input = {
      file: disk,
      name: 'root.qcow2',
      architecture: 'arm64',
      created: '2026-01-02T03:04:05.000Z',
      annotations: { 'dev.imgctl.image.name': 'web' },
    };
    const image = await containerDisk(input);
    expect(image.diskSha256).toBe(createHash('sha256').update(content).digest('hex'));
    const tar = await buffer(image.layer.open(0));
    expect(tar.length).toBe(image.layer.size);
    expect(tar.length % 512).toBe(0);
    expect(`sha256:${createHash('sha256').update(tar).digest('hex')}`).toBe(image.layer.digest);
    // a resumed upload gets the same bytes from its offset
    expect((await buffer(image.layer.open(700))).equals(tar.subarray(700))).toBe(true);
    expect((await buffer(image.layer.open(2000))).equals(tar.subarray(2000))).toBe(true);

    // GNU tar reads it: the directory and the file, their owner and mode, the disk's bytes
    await writeFile(join(dir, 'layer.tar'), tar);
    const { stdout: listing } = await execa('tar', [
      '-tvf',
      join(dir, 'layer.tar'),
      '--numeric-owner',
    ]);
    expect(listing).toMatch(/^dr-xr-xr-x 107\/107 +0 .* disk\/$/m);
    expect(listing).toMatch(/^-r--r----- 107\/107 +5000 .* disk\/root\.qcow2$/m);
    const { stdout: extracted } = await execa(
      'tar',
      ['-xOf', join(dir, 'layer.tar'), 'disk/root.qcow2'],
      {
        encoding: 'buffer',
      },
    );
    expect(Buffer.from(extracted).equals(content)).toBe(true);

    const manifest = JSON.parse(image.manifest.bytes.toString()) as {
      config: { digest: string };
      layers: Array<{ digest: string; size: number; mediaType: string }>;
    };
    expect(manifest.config.digest).toBe(image.config.digest);
    expect(manifest.layers).toEqual([
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: image.layer.digest,
        size: tar.length,
      },
    ]);
    expect(JSON.parse(image.manifest.bytes.toString())).toMatchObject({
      annotations: { 'dev.imgctl.image.name': 'web' },
    });
    expect(JSON.parse(image.config.bytes.toString())).toMatchObject({
      created: '2026-01-02T03:04:05.000Z',
      architecture: 'arm64',
      os: 'linux',
      config: { Labels: { 'dev.imgctl.image.name': 'web' } },
      rootfs: { type: 'layers', diff_ids: [image.layer.digest] },
    });
    expect((await containerDisk(input)).manifest.digest).toBe(image.manifest.digest);
  });

  it('names architectures as OCI does', () => {
    expect(ociArchitecture('x86_64')).toBe('amd64');
    expect(ociArchitecture('aarch64')).toBe('arm64');
    expect(ociArchitecture('pdp11')).toBeUndefined();
  });
});
