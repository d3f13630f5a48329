/**
 * `imgctl push` and `imgctl import oci://…` against a real registry: Debian's docker-registry
 * (distribution 2.8) with TLS from a throwaway CA and htpasswd auth (helpers/registry.ts), the
 * tiny appliance built in a copy of the example store, skopeo as the independent client that
 * reads back what was pushed, a push stopped (SIGTERM) or killed (SIGKILL) in the middle of a
 * disk, and a registry whose stored blob was altered behind it.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { execImgctl, listTree, makeStore, storeState, type TempDir } from './helpers/index.ts';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';
import { buildApplianceStore } from './helpers/seed.ts';

interface Pushed {
  tag: string;
  digest: string;
  reference: string;
  sentBytes: number;
  blobs: Array<{ what: string; digest: string; how: string; sentBytes: number; size: number }>;
}

interface RawManifest {
  artifactType: string;
  config: { mediaType: string; digest: string };
  layers: Array<{ mediaType: string; digest: string; annotations: Record<string, string> }>;
  annotations: Record<string, string>;
}

describe('imgctl push and import oci:// with a real registry', () => {
  let store: TempDir;
  let registry: TestRegistry;
  let disks: Array<{ id: string; format: string; sha256: string }>;
  /** the built appliance's revision: the tag a push defaults to */
  let revision: string;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    ({ store, disks, revision } = await buildApplianceStore());
    registry = await startRegistry({ auth: true, tls: true });
  }, 600_000);

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    await registry?.stop();
    await store?.cleanup();
  });

  const access = () => [
    ...['--registry-auth', registry.authFile!, '--registry-ca', registry.caFile!],
  ];
  const push = (storeDir: string, ref: string, target: string, extra: string[] = []) =>
    execImgctl(['--store', storeDir, 'push', ref, target, ...access(), ...extra, '--json']);
  const importOci = (storeDir: string, source: string, extra: string[] = []) =>
    execImgctl(['--store', storeDir, 'import', source, ...access(), ...extra]);
  /** The manifest as skopeo, an independent client, fetches it. */
  async function skopeoManifest(reference: string): Promise<{ bytes: Buffer; json: RawManifest }> {
    const run = await execa(
      'skopeo',
      [
        'inspect',
        '--raw',
        '--cert-dir',
        registry.certDir!,
        '--authfile',
        registry.authFile!,
        `docker://${reference}`,
      ],
      { encoding: 'buffer' },
    );
    const bytes = Buffer.from(run.stdout);
    return { bytes, json: JSON.parse(bytes.toString()) as RawManifest };
  }
  async function freshStore(): Promise<string> {
    const temp = await makeStore();
    cleanups.push(() => temp.cleanup());
    return temp.dir;
  }

  it('pushes the appliance: skopeo shows layers named by the disks sha256; a second push sends nothing', async () => {
    const target = `oci://${registry.url}/lab/tiny-linux`;
    const first = await push(store.dir, 'tiny-linux', target);
    expect(first.exitCode, first.stderr).toBe(0);
    const pushed = JSON.parse(first.stdout) as Pushed;
    expect(pushed.tag).toBe(revision);
    expect(pushed.blobs.map((b) => [b.what, b.how])).toEqual([
      ['disk root', 'uploaded'],
      ['disk data', 'uploaded'],
      ['config', 'uploaded'],
    ]);

    const { bytes, json } = await skopeoManifest(`${registry.url}/lab/tiny-linux:${revision}`);
    expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).toBe(pushed.digest);
    expect(json.artifactType).toBe('application/vnd.imgctl.image.v1');
    expect(json.config.mediaType).toBe('application/vnd.imgctl.image.config.v1+json');
    expect(json.layers.map((l) => l.digest)).toEqual(disks.map((d) => `sha256:${d.sha256}`));
    expect(json.layers.map((l) => l.mediaType)).toEqual(
      disks.map((d) => `application/vnd.imgctl.disk.v1.${d.format}`),
    );
    expect(json.layers[0]!.annotations['org.opencontainers.image.title']).toBe('root.raw');
    expect(json.annotations['dev.imgctl.image.name']).toBe('tiny-linux');

    const second = await push(store.dir, 'tiny-linux', target);
    expect(second.exitCode, second.stderr).toBe(0);
    const again = JSON.parse(second.stdout) as Pushed;
    expect(again.digest).toBe(pushed.digest);
    expect(again.blobs.map((b) => b.how)).toEqual(['present', 'present', 'present']);
    expect(again.sentBytes).toBe(0);
  });

  it('imports the pushed image into a fresh store, which then verifies clean', async () => {
    const other = await freshStore();
    const run = await importOci(other, `oci://${registry.url}/lab/tiny-linux:${revision}`);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(`imported image 'tiny-linux' revision ${revision}: .* 2 disk blobs`),
    );
    for (const file of ['image.yaml', 'provision.sh', 'appliance/init', 'records/default.yaml'])
      expect(await readFile(join(other, 'images/tiny-linux', file), 'utf8')).toBe(
        await readFile(join(store.dir, 'images/tiny-linux', file), 'utf8'),
      );
    const verify = await execImgctl(['--store', other, 'verify']);
    expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);

    const conflict = await importOci(other, `oci://${registry.url}/lab/tiny-linux:${revision}`);
    expect(conflict.exitCode).toBe(5);
    expect(conflict.stderr).toMatch(/image 'tiny-linux' already exists/);
  });

  it('pushes a disk past --segment-size as segments and imports it whole', async () => {
    const target = `oci://${registry.url}/lab/tiny-seg:v1`;
    const run = await push(store.dir, 'tiny-linux', target, ['--segment-size', '16MiB']);
    expect(run.exitCode, run.stderr).toBe(0);
    const { json } = await skopeoManifest(`${registry.url}/lab/tiny-seg:v1`);
    const root = json.layers.filter((l) => l.annotations['dev.imgctl.disk.id'] === 'root');
    expect(root.length).toBeGreaterThan(1);
    expect(new Set(root.map((l) => l.mediaType))).toEqual(
      new Set(['application/vnd.imgctl.disk.v1.raw.segment']),
    );

    const other = await freshStore();
    const imported = await importOci(other, target, ['--as', 'tiny-seg']);
    expect(imported.exitCode, imported.stderr).toBe(0);
    const root_ = disks.find((d) => d.id === 'root')!;
    const blob = join(other, '.blobs/sha256', root_.sha256.slice(0, 2), root_.sha256);
    expect(
      createHash('sha256')
        .update(await readFile(blob))
        .digest('hex'),
    ).toBe(root_.sha256);
    const verify = await execImgctl(['--store', other, 'verify']);
    expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);
  });

  /**
   * Starts a push of the appliance to `repository` in 512 KiB chunks with the built bundle and
   * sends `signal` once the registry holds 4 MiB of the root disk's upload.
   */
  async function pushStoppedMidway(repository: string, signal: NodeJS.Signals) {
    const uploads = join(registry.storageDir, 'docker/registry/v2/repositories', repository);
    const child = execa(
      process.execPath,
      [
        join(inject('distDir'), 'imgctl.mjs'),
        ...['--store', store.dir, 'push', 'tiny-linux', `oci://${registry.url}/${repository}`],
        ...access(),
        ...['--chunk-size', '512KiB'],
      ],
      { reject: false, env: { NO_COLOR: '1' } },
    );
    const held = async () => {
      const ids = await readdir(join(uploads, '_uploads')).catch(() => []);
      const sizes = await Promise.all(
        ids.map((id) =>
          stat(join(uploads, '_uploads', id, 'data')).then(
            (s) => s.size,
            () => 0,
          ),
        ),
      );
      return Math.max(0, ...sizes);
    };
    for (let waited = 0; (await held()) < 4 * 1024 * 1024; waited += 20) {
      if (child.exitCode !== null || waited > 60_000)
        throw new Error(`the push ended or stalled before 4 MiB: ${(await child).stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill(signal);
    return child;
  }

  it('a push stopped with SIGTERM in the middle of a disk resumes from the registry offset', async () => {
    const root = disks.find((d) => d.id === 'root')!;
    const stopped = await pushStoppedMidway('lab/tiny-stop', 'SIGTERM');
    expect(stopped.exitCode, stopped.stderr).toBe(1);
    expect(stopped.stderr).toMatch(/interrupted: stopping after the chunk being sent/);
    const interrupted = /interrupted: (\d+) of (\d+) bytes of sha256:(\w+)/.exec(stopped.stderr);
    expect(interrupted, stopped.stderr).not.toBeNull();
    expect(interrupted![3]).toBe(root.sha256);
    const offset = Number(interrupted![1]);
    expect(offset).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(offset).toBeLessThan(Number(interrupted![2]));
    expect(stopped.stderr).toMatch(/run the same push again: it resumes from there/);

    const again = await push(store.dir, 'tiny-linux', `oci://${registry.url}/lab/tiny-stop`, [
      ...['--chunk-size', '512KiB'],
    ]);
    expect(again.exitCode, again.stderr).toBe(0);
    const pushed = JSON.parse(again.stdout) as Pushed;
    const rootBlob = pushed.blobs.find((b) => b.what === 'disk root')!;
    expect(rootBlob.how).toBe('uploaded');
    expect(rootBlob.sentBytes).toBe(rootBlob.size - offset);
    const { json } = await skopeoManifest(`${registry.url}/lab/tiny-stop:${revision}`);
    expect(json.layers.map((l) => l.digest)).toEqual(disks.map((d) => `sha256:${d.sha256}`));
  });

  it('a push killed (SIGKILL) in the middle of a disk completes when run again', async () => {
    const killed = await pushStoppedMidway('lab/tiny-kill', 'SIGKILL');
    expect(killed.signal).toBe('SIGKILL');
    const again = await push(store.dir, 'tiny-linux', `oci://${registry.url}/lab/tiny-kill`);
    expect(again.exitCode, again.stderr).toBe(0);
    // distribution 2.8 drops a session whose PATCH was cut: the disk goes again from the start
    // (or from the registry's offset when the kill fell between two chunks)
    const rootBlob = (JSON.parse(again.stdout) as Pushed).blobs.find((b) => b.what === 'disk root');
    expect(rootBlob).toMatchObject({ how: 'uploaded' });
    const { json } = await skopeoManifest(`${registry.url}/lab/tiny-kill:${revision}`);
    expect(json.layers.map((l) => l.digest)).toEqual(disks.map((d) => `sha256:${d.sha256}`));
  });

  it('refuses a layer whose content is not its digest (INTEGRITY), the store unchanged', async () => {
    // the registry's stored copy of the root disk altered behind its back, same size
    const root = disks.find((d) => d.id === 'root')!;
    const data = join(
      registry.storageDir,
      'docker/registry/v2/blobs/sha256',
      root.sha256.slice(0, 2),
      root.sha256,
      'data',
    );
    const bytes = await readFile(data);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
    await writeFile(data, bytes);

    const other = await freshStore();
    const before = { state: await storeState(other), files: await listTree(other) };
    const run = await importOci(other, `oci://${registry.url}/lab/tiny-linux:${revision}`);
    expect(run.exitCode, run.stderr).toBe(7);
    expect(run.stderr).toMatch(/error\[INTEGRITY\]: refused the artifact: the content of layer/);
    expect(await storeState(other)).toBe(before.state);
    const after = (await listTree(other)).filter((f) => !f.startsWith('.state/'));
    expect(after).toEqual(before.files.filter((f) => !f.startsWith('.state/')));
    const staged = (await readdir(join(other, '.state'))).filter((n) => n.startsWith('import-'));
    expect(staged).toEqual([]);
  });
});
