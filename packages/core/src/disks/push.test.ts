import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { GOOD_STORE, IMAGE, makeStore, SHA } from '../../../../test/helpers/validate-documents.ts';
import { ImgctlError } from '../util/errors.ts';
import { setStoreSigningKey, verifyPlan, writeSigningKey } from '../plan/signing.ts';
import { createRelease, withdrawRelease } from '../store/releases.ts';
import { storePaths } from '../store/store.ts';
import type { OciDescriptor, Registry } from '../registry/types.ts';
import { importArchive } from './import.ts';
import { ANNOTATION, digestOf, SIGNATURE_ARTIFACT } from './oci-artifact.ts';
import { parseDiskIndex } from './oci-disk-index.ts';
import { pushImage } from './push.ts';
import { pushContainerDisk } from './push-containerdisk.ts';
import { verifyStore } from './verify.ts';

const MiB = 1024 * 1024;
const TARGET = 'oci://registry.test:5000/site/web';

/** An in-memory registry keeping what the contract promises: blobs checked by digest. */
function fakeRegistry() {
  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, { mediaType: string; bytes: Buffer }>();
  const referrers = new Map<string, OciDescriptor[]>();
  const registry: Registry = {
    hasBlob: async (_repository, digest) => blobs.has(digest),
    async pushBlob(_repository, source) {
      if (blobs.has(source.digest)) return { digest: source.digest, how: 'present', sentBytes: 0 };
      const chunks: Buffer[] = [];
      for await (const chunk of source.open(0)) chunks.push(chunk as Buffer);
      const bytes = Buffer.concat(chunks);
      if (digestOf(bytes) !== source.digest || bytes.length !== source.size)
        throw new ImgctlError('INTEGRITY', `pushed bytes are not ${source.digest}`);
      blobs.set(source.digest, bytes);
      return { digest: source.digest, how: 'uploaded', sentBytes: bytes.length };
    },
    async openBlob(_repository, digest, offset = 0) {
      const bytes = blobs.get(digest);
      if (!bytes) throw new ImgctlError('NOT_FOUND', `no blob ${digest}`);
      return Readable.from([bytes.subarray(offset)]);
    },
    async pullBlob(_repository, digest, _size, dest) {
      const bytes = blobs.get(digest);
      if (!bytes) throw new ImgctlError('NOT_FOUND', `no blob ${digest}`);
      if (digestOf(bytes) !== digest) throw new ImgctlError('INTEGRITY', `blob ${digest}`);
      await writeFile(dest, bytes);
      return { size: bytes.length, resumedBytes: 0 };
    },
    async putManifest(repository, reference, manifest) {
      const digest = digestOf(manifest.bytes);
      manifests.set(`${repository}:${reference}`, manifest);
      manifests.set(`${repository}:${digest}`, manifest);
      const parsed = JSON.parse(manifest.bytes.toString()) as {
        subject?: { digest: string };
        artifactType?: string;
        annotations?: Record<string, string>;
      };
      if (parsed.subject) {
        const list = referrers.get(parsed.subject.digest) ?? [];
        list.push({
          mediaType: manifest.mediaType,
          digest,
          size: manifest.bytes.length,
          artifactType: parsed.artifactType,
          annotations: parsed.annotations,
        });
        referrers.set(parsed.subject.digest, list);
      }
      return digest;
    },
    async getManifest(repository, reference) {
      const manifest = manifests.get(`${repository}:${reference}`);
      if (!manifest) throw new ImgctlError('NOT_FOUND', `no manifest ${reference}`);
      return { ...manifest, digest: digestOf(manifest.bytes) };
    },
    referrers: async (_repository, digest, artifactType) =>
      (referrers.get(digest) ?? []).filter((d) => !artifactType || d.artifactType === artifactType),
  };
  return { registry, blobs, manifests, open: () => registry };
}

const DATA = Buffer.alloc(4096, 'd');
const DATA_SHA = createHash('sha256').update(DATA).digest('hex');

/** web with a system disk of `content` and a data disk of 4 KiB in the store. */
async function storeWithDisk(content: Buffer): Promise<{ store: string; sha: string }> {
  const sha = createHash('sha256').update(content).digest('hex');
  const image = IMAGE.replace(SHA, sha).replace(
    '    size: 1GiB\n',
    `    size: 1GiB\n    sha256: ${DATA_SHA}\n    blob: true\n`,
  );
  const store = await makeStore({
    ...GOOD_STORE,
    'images/web/image.yaml': image,
    'images/web/provision.sh': '#!/bin/sh\necho provisioned\n',
  });
  for (const [hex, bytes] of [
    [sha, content],
    [DATA_SHA, DATA],
  ] as const) {
    const file = storePaths.blobFile(store, hex);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, bytes);
  }
  return { store, sha };
}

/** A disk of some data, then zeros (a hole when imported), then data again. */
function diskContent(size: number): Buffer {
  const bytes = Buffer.alloc(size);
  bytes.fill('imgctl', 0, MiB);
  bytes.fill('end', size - 4096);
  return bytes;
}

async function names(dir: string): Promise<string[]> {
  return readdir(dir, { recursive: true }).catch(() => []);
}

describe('pushImage', () => {
  it('pushes the disks as layers named by their sha256, then nothing again', async () => {
    const { store, sha } = await storeWithDisk(diskContent(3 * MiB));
    const fake = fakeRegistry();
    const first = await pushImage(store, 'web', TARGET, { openRegistry: fake.open });
    expect(first).toMatchObject({ image: 'web', revision: 1, tag: '1', repository: 'site/web' });
    expect(first.reference).toBe(`oci://registry.test:5000/site/web:1@${first.digest}`);
    expect(first.blobs.map((b) => [b.what, b.how])).toEqual([
      ['disk system', 'uploaded'],
      ['disk data', 'uploaded'],
      ['config', 'uploaded'],
    ]);
    expect(first.blobs[0]).toMatchObject({ digest: `sha256:${sha}`, sentBytes: 3 * MiB });
    const manifest = JSON.parse(fake.manifests.get('site/web:1')!.bytes.toString()) as {
      layers: OciDescriptor[];
    };
    expect(manifest.layers.map((l) => l.digest)).toEqual([`sha256:${sha}`, `sha256:${DATA_SHA}`]);

    const again = await pushImage(store, 'web', `${TARGET}:latest`, { openRegistry: fake.open });
    expect(again.digest).toBe(first.digest);
    expect(again.blobs.every((b) => b.how === 'present' && b.sentBytes === 0)).toBe(true);
    expect(again.sentBytes).toBe(0);
  });

  it('cuts a disk larger than the segment size into layers and imports it whole', async () => {
    const content = diskContent(7 * MiB + 512);
    const { store, sha } = await storeWithDisk(content);
    const fake = fakeRegistry();
    const pushed = await pushImage(store, 'web', TARGET, {
      openRegistry: fake.open,
      segmentSize: 2 * MiB,
    });
    // the two all-zero middle segments are one blob, one layer
    expect(pushed.blobs.map((b) => b.what)).toEqual([
      'disk system segment 1/4',
      'disk system segment 2/4',
      'disk system segment 4/4',
      'disk data',
      'disk index config',
      'config',
    ]);
    // the disk index an agent finds the segments by
    expect(pushed.diskIndexes).toEqual([`disk-${sha}`]);
    const index = fake.manifests.get(`site/web:disk-${sha}`)!.bytes;
    expect(parseDiskIndex(index, sha, 'site/web').map((p) => p.size)).toEqual([
      2 * MiB,
      2 * MiB,
      2 * MiB,
      MiB + 512,
    ]);
    const config = JSON.parse(
      fake.blobs
        .get(
          (
            JSON.parse(fake.manifests.get('site/web:1')!.bytes.toString()) as {
              config: OciDescriptor;
            }
          ).config.digest,
        )!
        .toString(),
    ) as { disks: Array<{ sha256: string; layers: string[] }> };
    expect(config.disks[0]!.sha256).toBe(sha);
    expect(config.disks[0]!.layers).toHaveLength(4);
    expect(config.disks[0]!.layers[1]).toBe(config.disks[0]!.layers[2]);

    const other = await makeStore({});
    const result = await importArchive(other, `${TARGET}:1`, { openRegistry: fake.open });
    expect(result).toMatchObject({ image: 'web', revision: 1, blobs: 2, digest: pushed.digest });
    const blob = storePaths.blobFile(other, sha);
    expect((await readFile(blob)).equals(content)).toBe(true);
    // the zeros are holes again
    expect((await stat(blob)).blocks * 512).toBeLessThan(content.length);
  });

  it('refuses a damaged segmented disk before sending anything', async () => {
    const { store, sha } = await storeWithDisk(diskContent(3 * MiB));
    await writeFile(storePaths.blobFile(store, sha), diskContent(3 * MiB).fill(1, 0, 10));
    const fake = fakeRegistry();
    await expect(
      pushImage(store, 'web', TARGET, { openRegistry: fake.open, segmentSize: MiB }),
    ).rejects.toMatchObject({ code: 'INTEGRITY' });
    expect(fake.blobs.size).toBe(0);
  });

  it('hashes two disks of the same content once and tags one disk index for them', async () => {
    const { store, sha } = await storeWithDisk(diskContent(3 * MiB));
    const image = join(store, 'images/web/image.yaml');
    await writeFile(image, (await readFile(image, 'utf8')).replace(DATA_SHA, sha));
    const fake = fakeRegistry();
    const hashing = new Set<string>();
    const pushed = await pushImage(store, 'web', TARGET, {
      openRegistry: fake.open,
      segmentSize: MiB,
      onProgress: (p) => {
        if (p.step.startsWith('hashing')) hashing.add(p.step);
      },
    });
    expect([...hashing]).toEqual(['hashing disk system']);
    expect(pushed.diskIndexes).toEqual([`disk-${sha}`]);
    expect(pushed.blobs.filter((b) => b.what === 'disk index config')).toHaveLength(1);
  });

  it('stops hashing at Ctrl-C (windDown), both pushes, having sent nothing', async () => {
    const { store } = await storeWithDisk(diskContent(3 * MiB));
    const fake = fakeRegistry();
    /** Ctrl-C at the first MiB hashed; the bytes hashed seen */
    const ctrlC = () => {
      const windDown = new AbortController();
      const hashed: number[] = [];
      return {
        hashed,
        options: {
          openRegistry: fake.open,
          registry: { windDown: windDown.signal },
          onProgress: (p: { step: string; done: number }) => {
            if (!p.step.startsWith('hashing')) return;
            hashed.push(p.done);
            windDown.abort();
          },
        },
      };
    };
    const interrupted = {
      code: 'FAILED',
      message: 'interrupted while hashing disk system: nothing was sent',
    };
    const segmented = ctrlC();
    await expect(
      pushImage(store, 'web', TARGET, { ...segmented.options, segmentSize: MiB }),
    ).rejects.toMatchObject(interrupted);
    expect(segmented.hashed).toEqual([MiB]);
    const containerdisk = ctrlC();
    await expect(
      pushContainerDisk(store, 'web', TARGET, containerdisk.options),
    ).rejects.toMatchObject(interrupted);
    expect(containerdisk.hashed).toEqual([MiB]);
    expect(fake.blobs.size).toBe(0);
  });

  it('pushes a release with its signed plan as a referrer, once', async () => {
    const { store } = await storeWithDisk(diskContent(MiB));
    const key = await writeSigningKey(join(store, '.state/keys/signing.key'));
    await setStoreSigningKey(store, key.privateKey);
    await createRelease(store, 'web', { channels: ['stable'] });
    const fake = fakeRegistry();
    const now = new Date();
    const pushed = await pushImage(store, 'web@stable', TARGET, { openRegistry: fake.open, now });
    expect(pushed).toMatchObject({ release: 'web@1', tag: '1' });
    expect(pushed.signature).toMatchObject({ keyId: key.keyId, reused: false });
    const referrer = JSON.parse(
      fake.manifests.get(`site/web:${pushed.signature!.digest}`)!.bytes.toString(),
    ) as {
      artifactType: string;
      subject: OciDescriptor;
      layers: OciDescriptor[];
      annotations: Record<string, string>;
    };
    expect(referrer.artifactType).toBe(SIGNATURE_ARTIFACT);
    expect(referrer.subject.digest).toBe(pushed.digest);
    expect(referrer.annotations[ANNOTATION.keyId]).toBe(key.keyId);
    const signed = JSON.parse(fake.blobs.get(referrer.layers[0]!.digest)!.toString()) as {
      plan: { image: { release: string } };
      signature: Parameters<typeof verifyPlan>[1];
    };
    expect(signed.plan.image.release).toBe('web@1');
    const { createPublicKey } = await import('node:crypto');
    expect(() =>
      verifyPlan(signed.plan, signed.signature, createPublicKey(key.publicKeyPem), now),
    ).not.toThrow();

    const again = await pushImage(store, 'web@1', TARGET, { openRegistry: fake.open, now });
    expect(again.digest).toBe(pushed.digest);
    expect(again.signature).toMatchObject({ digest: pushed.signature!.digest, reused: true });
  });

  it('refuses a revoked release and a digest as the target', async () => {
    const { store } = await storeWithDisk(diskContent(MiB));
    await createRelease(store, 'web');
    await withdrawRelease(store, 'web@1', 'revoke', { reason: 'broken' });
    const fake = fakeRegistry();
    await expect(pushImage(store, 'web@1', TARGET, { openRegistry: fake.open })).rejects.toThrow(
      /web@1 is revoked since .*: broken/,
    );
    await expect(
      pushImage(store, 'web', `${TARGET}@sha256:${'0'.repeat(64)}`, { openRegistry: fake.open }),
    ).rejects.toMatchObject({ code: 'USAGE' });
  });
});

describe('importArchive of oci://', () => {
  it('brings the image into a fresh store, verified', async () => {
    const { store, sha } = await storeWithDisk(diskContent(2 * MiB));
    const fake = fakeRegistry();
    const pushed = await pushImage(store, 'web', TARGET, { openRegistry: fake.open });
    const other = await makeStore({});
    const result = await importArchive(other, `${TARGET}@${pushed.digest}`, {
      openRegistry: fake.open,
    });
    expect(result).toMatchObject({ image: 'web', blobs: 2, blobsReused: 0, replaced: false });
    for (const file of ['image.yaml', 'provision.sh', 'custom_scripts/base/10-hello.sh']) {
      expect(await readFile(join(other, 'images/web', file), 'utf8')).toBe(
        await readFile(join(store, 'images/web', file), 'utf8'),
      );
    }
    expect((await stat(join(other, 'images/web/provision.sh'))).mode & 0o777).toBe(0o644);
    const copied = await readFile(storePaths.blobFile(other, sha));
    expect(copied.equals(await readFile(storePaths.blobFile(store, sha)))).toBe(true);
    expect((await verifyStore(other)).problems).toEqual([]);

    // the same again: a conflict, unless --force or --as
    await expect(
      importArchive(other, `${TARGET}:1`, { openRegistry: fake.open }),
    ).rejects.toMatchObject({ code: 'CONFLICT' });
    const copy = await importArchive(other, `${TARGET}:1`, { openRegistry: fake.open, as: 'web2' });
    expect(copy).toMatchObject({ image: 'web2', packedAs: 'web', blobsReused: 2 });
    expect(await readFile(join(other, 'images/web2/image.yaml'), 'utf8')).toMatch(/^name: web2$/m);
  });

  it('refuses a layer whose content is not its digest, the store unchanged', async () => {
    const { store, sha } = await storeWithDisk(diskContent(2 * MiB));
    const fake = fakeRegistry();
    await pushImage(store, 'web', TARGET, { openRegistry: fake.open });
    fake.blobs.set(`sha256:${sha}`, diskContent(2 * MiB).fill(7, 100, 200));
    const other = await makeStore({});
    const before = await names(other);
    await expect(
      importArchive(other, `${TARGET}:1`, { openRegistry: fake.open }),
    ).rejects.toMatchObject({ code: 'INTEGRITY', message: expect.stringMatching(/hashes to/) });
    expect(await names(join(other, 'images'))).toEqual([]);
    expect(await names(join(other, '.blobs'))).toEqual([]);
    expect((await names(other)).filter((n) => !n.startsWith('.state'))).toEqual(
      before.filter((n) => !n.startsWith('.state')),
    );
    expect((await names(join(other, '.state'))).filter((n) => n.startsWith('import-'))).toEqual([]);
  });

  it('refuses what is not an imgctl image', async () => {
    const { store } = await storeWithDisk(diskContent(MiB));
    const fake = fakeRegistry();
    await fake.registry.putManifest('site/web', 'other', {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      bytes: Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: {
            mediaType: 'application/vnd.oci.image.config.v1+json',
            digest: `sha256:${SHA}`,
            size: 2,
          },
          layers: [],
        }),
      ),
    });
    await expect(
      importArchive(store, `${TARGET}:other`, { openRegistry: fake.open }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      message: expect.stringMatching(/not an imgctl image/),
    });
  });
});

describe('pushContainerDisk', () => {
  it('pushes the boot disk as a containerDisk image, names what it left out, then nothing again', async () => {
    const { store, sha } = await storeWithDisk(diskContent(MiB));
    const fake = fakeRegistry();
    const first = await pushContainerDisk(store, 'web', TARGET, { openRegistry: fake.open });
    expect(first).toMatchObject({ image: 'web', revision: 1, tag: '1' });
    expect(first.containerDisk).toMatchObject({
      disk: 'system',
      format: 'qcow2',
      path: '/disk/system.qcow2',
      sha256: sha,
      architecture: 'amd64',
      leftOut: [{ id: 'data', use: 'data' }],
    });
    expect(first.blobs.map((b) => [b.what, b.how])).toEqual([
      ['layer /disk/system.qcow2', 'uploaded'],
      ['config', 'uploaded'],
    ]);
    const manifest = JSON.parse(fake.manifests.get('site/web:1')!.bytes.toString()) as {
      mediaType: string;
      artifactType?: string;
      config: OciDescriptor;
      layers: OciDescriptor[];
      annotations: Record<string, string>;
    };
    expect(manifest.artifactType).toBeUndefined();
    expect(manifest.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');
    expect(manifest.layers).toEqual([
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: first.containerDisk.layer,
        size: MiB + 4 * 512, // the directory's and the file's headers, two end blocks
      },
    ]);
    expect(manifest.annotations).toMatchObject({
      [ANNOTATION.image]: 'web',
      [ANNOTATION.revision]: '1',
      'dev.imgctl.disk.sha256': sha,
    });
    expect(JSON.parse(fake.blobs.get(manifest.config.digest)!.toString())).toMatchObject({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { diff_ids: [first.containerDisk.layer] },
    });

    // the registry has the layer this disk made: the disk is not read again
    const steps: string[] = [];
    const onProgress = (p: { step: string }) => steps.push(p.step);
    const again = await pushContainerDisk(store, 'web', TARGET, {
      openRegistry: fake.open,
      onProgress,
    });
    expect(again.digest).toBe(first.digest);
    expect(again.sentBytes).toBe(0);
    expect(steps.filter((s) => s.startsWith('hashing'))).toEqual([]);
    // a registry without it: read (and checked) again
    const other = fakeRegistry();
    await pushContainerDisk(store, 'web', TARGET, { openRegistry: other.open, onProgress });
    expect(steps.filter((s) => s.startsWith('hashing')).length).toBeGreaterThan(0);
    expect(other.blobs.has(first.containerDisk.layer)).toBe(true);
  });

  it('refuses a damaged disk, and a format KubeVirt does not boot, before sending anything', async () => {
    const { store, sha } = await storeWithDisk(diskContent(MiB));
    const fake = fakeRegistry();
    await writeFile(storePaths.blobFile(store, sha), diskContent(MiB).fill(1, 0, 10));
    await expect(
      pushContainerDisk(store, 'web', TARGET, { openRegistry: fake.open }),
    ).rejects.toMatchObject({ code: 'INTEGRITY' });

    const image = join(store, 'images/web/image.yaml');
    await writeFile(
      image,
      (await readFile(image, 'utf8')).replace('format: qcow2', 'format: vmdk'),
    );
    await expect(
      pushContainerDisk(store, 'web', TARGET, { openRegistry: fake.open }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      message: expect.stringMatching(/is vmdk: a KubeVirt containerDisk holds raw or qcow2/),
    });
    expect(fake.blobs.size).toBe(0);
  });
});
