/**
 * The registry client (packages/core/src/registry) against a real registry: Debian's
 * docker-registry (distribution 2.8) with htpasswd auth and TLS from a throwaway CA, checked
 * by skopeo as an independent client. No fakes: faults are real aborts and a real TCP cut.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { parseOciReference } from '@imgctl/core/registry/reference';
import { openRegistry } from '@imgctl/core/registry/registry';
import type { BlobSource, Registry, RegistryOptions } from '@imgctl/core/registry/types';
import { ImgctlError } from '@imgctl/core/util/errors';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';

const MiB = 1024 * 1024;
const SIZE = 40 * MiB;
const CHUNK = 8 * MiB;
const EMPTY = Buffer.from('{}');
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const ARTIFACT_TYPE = 'application/vnd.imgctl.test.v1';

let registry: TestRegistry;
let dir: string;
let blobFile: string;
let blob: Buffer;
let digest: string;
let lines: string[];

function fileSource(file: string, data: Buffer): BlobSource {
  return {
    digest: sha256(data),
    size: data.length,
    open: (offset) => createReadStream(file, { start: offset, highWaterMark: MiB }),
  };
}

function open(extra: RegistryOptions = {}, host = registry.url): Registry {
  return openRegistry(parseOciReference(`oci://${host}/e2e/app`), {
    authFile: registry.authFile,
    caFile: registry.caFile,
    chunkSize: CHUNK,
    log: (line) => lines.push(line),
    ...extra,
  });
}

function skopeo(args: string[]) {
  return execa('skopeo', [
    ...args.slice(0, 1),
    '--raw',
    '--cert-dir',
    registry.certDir!,
    '--authfile',
    registry.authFile!,
    ...args.slice(1),
  ]);
}

beforeAll(async () => {
  registry = await startRegistry({ auth: true, tls: true });
  dir = await mkdtemp(join(tmpdir(), 'imgctl-registry-client-'));
  blob = randomBytes(SIZE);
  digest = sha256(blob);
  blobFile = join(dir, 'blob');
  await writeFile(blobFile, blob);
});

afterAll(async () => {
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a registry with htpasswd auth and TLS', () => {
  it('pushes a 40 MiB blob in 8 MiB chunks, sees it with HEAD, skips it the second time and mounts it elsewhere', async () => {
    lines = [];
    const client = open();
    expect(await client.hasBlob('e2e/app', digest)).toBe(false);
    const started = performance.now();
    const pushed = await client.pushBlob('e2e/app', fileSource(blobFile, blob));
    const seconds = (performance.now() - started) / 1000;
    expect(pushed).toEqual({ digest, how: 'uploaded', sentBytes: SIZE });
    expect(registry.log().match(/"PATCH \/v2\/e2e\/app\/blobs\/uploads\//g)).toHaveLength(5);
    expect(await client.hasBlob('e2e/app', digest)).toBe(true);
    expect(await client.pushBlob('e2e/app', fileSource(blobFile, blob))).toEqual({
      digest,
      how: 'present',
      sentBytes: 0,
    });
    expect(
      await client.pushBlob('e2e/other', fileSource(blobFile, blob), { mountFrom: ['e2e/app'] }),
    ).toEqual({ digest, how: 'mounted', sentBytes: 0 });
    expect(await client.hasBlob('e2e/other', digest)).toBe(true);
    console.info(`registry-client: pushed 40 MiB in ${(SIZE / MiB / seconds).toFixed(0)} MiB/s`);
  });

  it('puts an artifact manifest that skopeo reads back with the blob as its layer', async () => {
    const client = open();
    await client.pushBlob('e2e/app', {
      digest: sha256(EMPTY),
      size: 2,
      open: () => toStream(EMPTY),
    });
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: ARTIFACT_TYPE,
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(EMPTY), size: 2 },
        layers: [{ mediaType: 'application/vnd.imgctl.disk.raw', digest, size: SIZE }],
      }),
    );
    const manifestDigest = await client.putManifest('e2e/app', 'v1', {
      mediaType: OCI_MANIFEST,
      bytes: manifest,
    });
    expect(manifestDigest).toBe(sha256(manifest));
    const { stdout } = await skopeo(['inspect', `docker://${registry.url}/e2e/app:v1`]);
    const seen = JSON.parse(stdout) as { artifactType: string; layers: { digest: string }[] };
    expect(seen.artifactType).toBe(ARTIFACT_TYPE);
    expect(seen.layers[0]!.digest).toBe(digest);
    expect(sha256(Buffer.from(stdout))).toBe(manifestDigest);
    const back = await client.getManifest('e2e/app', manifestDigest, [OCI_MANIFEST]);
    expect(back).toEqual({ mediaType: OCI_MANIFEST, bytes: manifest, digest: manifestDigest });
  });

  it('resumes an upload stopped between chunks from the registry offset, sending only the rest', async () => {
    lines = [];
    const uploadStateDir = join(dir, 'uploads');
    const controller = new AbortController();
    const first = open({
      uploadStateDir,
      signal: controller.signal,
      onProgress: (done) => done >= 3 * CHUNK && controller.abort(new Error('stopped by the test')),
    });
    await expect(first.pushBlob('e2e/resume', fileSource(blobFile, blob))).rejects.toThrow(
      'stopped by the test',
    );
    const second = await open({ uploadStateDir }).pushBlob(
      'e2e/resume',
      fileSource(blobFile, blob),
    );
    expect(second).toEqual({ digest, how: 'uploaded', sentBytes: SIZE - 3 * CHUNK });
    expect(lines).toContain(`resuming the upload of ${digest.slice(0, 19)} at byte ${3 * CHUNK}`);
    const dest = join(dir, 'resumed');
    await open().pullBlob('e2e/resume', digest, SIZE, dest);
    expect(sha256(await readFile(dest))).toBe(digest);
  });

  it('uploads the blob again when a PATCH is cut inside a chunk (distribution 2.8 drops that session)', async () => {
    lines = [];
    const cut = await startCutProxy(registry.port, 12 * MiB);
    try {
      const authFile = join(dir, 'proxy-auth.json');
      const auth = Buffer.from(`${registry.user}:${registry.password}`).toString('base64');
      await writeFile(authFile, JSON.stringify({ auths: { [cut.host]: { auth } } }), {
        mode: 0o600,
      });
      const pushed = await open({ authFile }, cut.host).pushBlob(
        'e2e/cut',
        fileSource(blobFile, blob),
      );
      expect(cut.cuts()).toBe(1);
      expect(pushed.how).toBe('uploaded');
      // the first chunk was accepted before the cut, then all of it again
      expect(pushed.sentBytes).toBe(CHUNK + SIZE);
      expect(lines.some((l) => /asking the registry where the upload stands/.test(l))).toBe(true);
      expect(lines.some((l) => /again from the start: .*no longer knows the session/.test(l))).toBe(
        true,
      );
      expect(await open().hasBlob('e2e/cut', digest)).toBe(true);
    } finally {
      await cut.close();
    }
  });

  it('pulls the blob to a file, stopped and resumed with Range, and its sha256 matches', async () => {
    const dest = join(dir, 'pulled');
    const controller = new AbortController();
    const first = open({
      signal: controller.signal,
      onProgress: (done) => done >= 15 * MiB && controller.abort(new Error('stopped by the test')),
    });
    await expect(first.pullBlob('e2e/app', digest, undefined, dest)).rejects.toThrow(
      'stopped by the test',
    );
    const partial = (await stat(`${dest}.partial`)).size;
    expect(partial).toBeGreaterThanOrEqual(15 * MiB);
    expect(partial).toBeLessThan(SIZE);
    const resumed = await open().pullBlob('e2e/app', digest, undefined, dest);
    expect(resumed).toEqual({ size: SIZE, resumedBytes: partial });
    expect(sha256(await readFile(dest))).toBe(digest);
    await expect(stat(`${dest}.partial`)).rejects.toThrow(/ENOENT/);

    const whole = join(dir, 'pulled-whole');
    const started = performance.now();
    await open().pullBlob('e2e/app', digest, SIZE, whole);
    const seconds = (performance.now() - started) / 1000;
    console.info(`registry-client: pulled 40 MiB in ${(SIZE / MiB / seconds).toFixed(0)} MiB/s`);
  });

  it('says wrong credentials were refused, with a code, naming the file and never the password', async () => {
    const authFile = join(dir, 'wrong.json');
    const password = 'not-the-password-42';
    const auth = Buffer.from(`${registry.user}:${password}`).toString('base64');
    await writeFile(authFile, JSON.stringify({ auths: { [registry.url]: { auth } } }), {
      mode: 0o600,
    });
    const error = await open({ authFile })
      .hasBlob('e2e/app', digest)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImgctlError);
    expect((error as ImgctlError).code).toBe('USAGE');
    expect((error as ImgctlError).message).toBe(
      `HEAD blob ${digest.slice(0, 19)} in e2e/app: ${registry.url} refused the credentials for ${registry.url} in ${authFile} (401)`,
    );
    const said = `${(error as ImgctlError).message} ${(error as ImgctlError).hint}`;
    expect(said).not.toContain(password);
    expect(said).not.toContain(auth);
    expect(said).not.toContain(registry.password!);
  });

  it('refuses a manifest over 4 MiB before sending it', async () => {
    const bytes = Buffer.alloc(4 * MiB + 1, 0x20);
    const error = await open()
      .putManifest('e2e/big', 'v1', { mediaType: OCI_MANIFEST, bytes })
      .catch((e: unknown) => e);
    expect((error as ImgctlError).code).toBe('VALIDATION');
    expect(registry.log()).not.toMatch(/\/v2\/e2e\/big\/manifests/);
  });

  it('finds a referrer through the sha256-<hex> tag, the registry having no referrers API', async () => {
    const client = open();
    const subject = await client.getManifest('e2e/app', 'v1', [OCI_MANIFEST]);
    const signature = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: 'application/vnd.imgctl.signature.v1',
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(EMPTY), size: 2 },
        layers: [
          { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(EMPTY), size: 2 },
        ],
        subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.bytes.length },
      }),
    );
    const signatureDigest = await client.putManifest('e2e/app', sha256(signature), {
      mediaType: OCI_MANIFEST,
      bytes: signature,
    });
    const found = await client.referrers(
      'e2e/app',
      subject.digest,
      'application/vnd.imgctl.signature.v1',
    );
    expect(found).toEqual([
      {
        mediaType: OCI_MANIFEST,
        artifactType: 'application/vnd.imgctl.signature.v1',
        digest: signatureDigest,
        size: signature.length,
      },
    ]);
    expect(registry.log()).toMatch(
      /"GET \/v2\/e2e\/app\/referrers\/sha256:\w+\?artifactType=\S+ HTTP\/1.1" 404/,
    );
    const tag = subject.digest.replace(':', '-');
    const { stdout } = await skopeo(['inspect', `docker://${registry.url}/e2e/app:${tag}`]);
    const index = JSON.parse(stdout) as { mediaType: string; manifests: { digest: string }[] };
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(index.manifests.map((m) => m.digest)).toEqual([signatureDigest]);
  });
});

function toStream(data: Buffer) {
  return Readable.from([data]);
}

/** A TCP proxy to the registry that cuts the first connection to pass `after` bytes upstream. */
async function startCutProxy(port: number, after: number) {
  let cuts = 0;
  let total = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (cuts === 0 && total > after) {
        cuts += 1;
        client.resetAndDestroy();
        upstream.destroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    cuts: () => cuts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
