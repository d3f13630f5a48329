/**
 * `imgctl push … --containerdisk` against a real registry — Debian's docker-registry with TLS
 * and htpasswd (helpers/registry.ts) — with the tiny appliance of the example store: skopeo, an
 * independent client, reads it as the container image KubeVirt pulls (os, architecture, one
 * layer), copies it out, and GNU tar finds `/disk/<file>` in the layer, owned 107:107 with mode
 * 0440, whose sha256 is the system disk's.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyExampleStore, execImgctl, makeTempDir, type TempDir } from './helpers/index.ts';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';
import { buildAppliance } from './helpers/seed.ts';

interface Pushed {
  tag: string;
  digest: string;
  sentBytes: number;
  blobs: Array<{ what: string; how: string; sentBytes: number }>;
  containerDisk: {
    disk: string;
    path: string;
    sha256: string;
    layer: string;
    architecture: string;
    leftOut: Array<{ id: string; use: string }>;
  };
}

/** What `skopeo inspect` (not --raw) shows of a container image. */
interface Inspected {
  Architecture: string;
  Os: string;
  Layers: string[];
  Labels: Record<string, string>;
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('imgctl push --containerdisk with a real registry, read back by skopeo and tar', () => {
  let store: TempDir;
  let work: TempDir;
  let registry: TestRegistry;
  let root: { id: string; format: string; sha256: string };
  let revision: string;

  beforeAll(async () => {
    store = await copyExampleStore();
    work = await makeTempDir('imgctl-containerdisk-');
    const build = await buildAppliance(store.dir);
    if (build.exitCode !== 0) throw new Error(`imgctl build tiny-linux failed:\n${build.stderr}`);
    const image = parse(
      await readFile(join(store.dir, 'images/tiny-linux/image.yaml'), 'utf8'),
    ) as { disks: Array<typeof root & { use: string }>; revision: number };
    root = image.disks.find((d) => d.use === 'system')!;
    revision = String(image.revision);
    registry = await startRegistry({ auth: true, tls: true });
  }, 600_000);

  afterAll(async () => {
    await registry?.stop();
    await work?.cleanup();
    await store?.cleanup();
  });

  const push = (target: string, extra: string[] = []) =>
    execImgctl([
      ...['--store', store.dir, 'push', 'tiny-linux', target, '--containerdisk'],
      ...['--registry-auth', registry.authFile!, '--registry-ca', registry.caFile!],
      ...extra,
    ]);
  const skopeoAccess = () => ['--cert-dir', registry.certDir!, '--authfile', registry.authFile!];

  it('pushes a container image whose layer holds /disk/<file>: the system disk, 107:107, 0440', async () => {
    const target = `oci://${registry.url}/kubevirt/tiny-linux`;
    const first = await push(target, ['--json']);
    expect(first.exitCode, first.stderr).toBe(0);
    const pushed = JSON.parse(first.stdout) as Pushed;
    const file = `${root.id}.${root.format}`;
    expect(pushed.tag).toBe(revision);
    expect(pushed.containerDisk).toMatchObject({
      disk: root.id,
      path: `/disk/${file}`,
      sha256: root.sha256,
      architecture: 'amd64',
      leftOut: [{ id: 'data', use: 'data' }],
    });
    expect(pushed.blobs.map((b) => [b.what, b.how])).toEqual([
      [`layer /disk/${file}`, 'uploaded'],
      ['config', 'uploaded'],
    ]);

    const reference = `${registry.url}/kubevirt/tiny-linux:${revision}`;
    const inspect = await execa('skopeo', ['inspect', ...skopeoAccess(), `docker://${reference}`]);
    const inspected = JSON.parse(inspect.stdout) as Inspected;
    expect(inspected.Os).toBe('linux');
    expect(inspected.Architecture).toBe('amd64');
    expect(inspected.Layers).toEqual([pushed.containerDisk.layer]);
    expect(inspected.Labels).toMatchObject({
      'dev.imgctl.image.name': 'tiny-linux',
      'dev.imgctl.image.revision': revision,
      'dev.imgctl.disk.sha256': root.sha256,
    });

    // dir: keeps each blob as the registry serves it (oci: would compress the layer)
    const copied = join(work.dir, 'copied');
    await execa('skopeo', [
      'copy',
      ...['--src-cert-dir', registry.certDir!, '--src-authfile', registry.authFile!],
      `docker://${reference}`,
      `dir:${copied}`,
    ]);
    const manifest = JSON.parse(await readFile(join(copied, 'manifest.json'), 'utf8')) as {
      mediaType: string;
      layers: Array<{ mediaType: string; digest: string }>;
    };
    expect(manifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(manifest.layers).toMatchObject([
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: pushed.containerDisk.layer },
    ]);
    const layer = join(copied, pushed.containerDisk.layer.slice('sha256:'.length));
    expect(`sha256:${await sha256Of(layer)}`).toBe(pushed.containerDisk.layer);
    const listing = await execa('tar', ['-tvf', layer, '--numeric-owner']);
    expect(listing.stdout).toMatch(/^dr-xr-xr-x 107\/107 +0 .* disk\/$/m);
    expect(listing.stdout).toMatch(new RegExp(`^-r--r----- 107/107 +\\d+ .* disk/${file}$`, 'm'));
    expect(listing.stdout.trim().split('\n')).toHaveLength(2);
    const extracted = join(work.dir, 'rootfs');
    await mkdir(extracted);
    await execa('tar', ['-xf', layer, '-C', extracted, '--numeric-owner']);
    const disk = join(extracted, 'disk', file);
    expect((await stat(disk)).uid).toBe(107);
    expect(await sha256Of(disk)).toBe(root.sha256);

    const second = await push(target, ['--json']);
    expect(second.exitCode, second.stderr).toBe(0);
    const again = JSON.parse(second.stdout) as Pushed;
    expect(again.digest).toBe(pushed.digest);
    expect(again.blobs.map((b) => b.how)).toEqual(['present', 'present']);
    expect(again.sentBytes).toBe(0);

    const text = await push(target);
    expect(text.exitCode, text.stderr).toBe(0);
    expect(text.stdout).toMatch(
      new RegExp(
        `a KubeVirt containerDisk \\(amd64\\) of disk root: /disk/${file}, .*sha256 ${root.sha256}`,
      ),
    );
    expect(text.stdout).toMatch(
      /not in it: disk data \(data\) — a containerDisk holds the boot disk only/,
    );
  });

  it('refuses --segment-size with --containerdisk (USAGE), sending nothing', async () => {
    const run = await push(`oci://${registry.url}/kubevirt/refused`, ['--segment-size', '16MiB']);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toMatch(/--segment-size does not go with --containerdisk/);
    const repositories = join(registry.storageDir, 'docker/registry/v2/repositories');
    await expect(stat(join(repositories, 'kubevirt/refused'))).rejects.toThrow(/ENOENT/);
  });
});
