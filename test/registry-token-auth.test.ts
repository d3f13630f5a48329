/**
 * `imgctl push` and `imgctl import oci://…` against a registry that asks for bearer tokens, as
 * Docker Hub, Harbor, Quay, GHCR and GitLab do: Debian's docker-registry (distribution 2.8) with
 * `auth: token` checks the tokens (JWT, ES256, x5c against its rootcertbundle) that a token
 * service started by the test issues (helpers/token-service.ts). skopeo is the independent
 * client reading back what was pushed with the same credentials.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execImgctl, makeStore, type TempDir } from './helpers/index.ts';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';
import { buildApplianceStore } from './helpers/seed.ts';

interface Pushed {
  digest: string;
  blobs: Array<{ what: string; digest: string; how: string; size: number }>;
}

const pushScope = (repository: string) => `repository:${repository}:pull,push`;

describe('imgctl push and import oci:// with a bearer-token registry', () => {
  let store: TempDir;
  let registry: TestRegistry;
  let disks: Array<{ id: string; sha256: string }>;
  let revision: string;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    ({ store, disks, revision } = await buildApplianceStore());
    registry = await startRegistry({ tokenAuth: true, tls: true });
  }, 600_000);

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    await registry?.stop();
    await store?.cleanup();
  });

  const access = (authFile = registry.authFile!) => [
    ...['--registry-auth', authFile, '--registry-ca', registry.caFile!],
  ];
  const push = (repository: string, authFile?: string, extra: string[] = []) =>
    execImgctl([
      ...['--store', store.dir, 'push', 'tiny-linux', `oci://${registry.url}/${repository}`],
      ...access(authFile),
      ...extra,
    ]);
  async function importInto(repository: string, authFile?: string) {
    const temp = await makeStore();
    cleanups.push(() => temp.cleanup());
    const run = await execImgctl([
      ...['--store', temp.dir, 'import', `oci://${registry.url}/${repository}:${revision}`],
      ...access(authFile),
    ]);
    return { dir: temp.dir, run };
  }
  /** The layer digests of a pushed manifest as skopeo, with the same credentials, reads them. */
  async function skopeoLayers(repository: string): Promise<string[]> {
    const run = await execa('skopeo', [
      ...['inspect', '--raw', '--cert-dir', registry.certDir!],
      ...['--authfile', registry.authFile!, `docker://${registry.url}/${repository}:${revision}`],
    ]);
    return (JSON.parse(run.stdout) as { layers: Array<{ digest: string }> }).layers.map(
      (l) => l.digest,
    );
  }
  const diskDigests = () => disks.map((d) => `sha256:${d.sha256}`);

  it('pushes with a bearer token, skopeo reads it back, import into a fresh store verifies clean', async () => {
    const pushed = await push('lab/tiny-token', undefined, ['--json']);
    expect(pushed.exitCode, pushed.stderr).toBe(0);
    const result = JSON.parse(pushed.stdout) as Pushed;
    expect(result.blobs.map((b) => [b.what, b.how])).toEqual([
      ['disk root', 'uploaded'],
      ['disk data', 'uploaded'],
      ['config', 'uploaded'],
    ]);
    // the registry sent imgctl to the token service for pull and push
    expect(registry.tokenService!.issued(pushScope('lab/tiny-token'))).toBeGreaterThan(0);

    expect(await skopeoLayers('lab/tiny-token')).toEqual(diskDigests());

    const { dir, run } = await importInto('lab/tiny-token');
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/imported image 'tiny-linux' revision .* 2 disk blobs/);
    const verify = await execImgctl(['--store', dir, 'verify']);
    expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);
  });

  it('a wrong password: a clear USAGE error naming the auth file, the secret never printed', async () => {
    const wrong = `wrong-${registry.password!.slice(0, 12)}-secret`;
    const file = join(store.dir, '..', `auth-wrong-${process.pid}.json`);
    const auth = Buffer.from(`${registry.user}:${wrong}`).toString('base64');
    await writeFile(file, JSON.stringify({ auths: { [registry.url]: { auth } } }), {
      mode: 0o600,
    });
    cleanups.push(() => rm(file, { force: true }));

    const pushed = await push('lab/tiny-wrong', file);
    const imported = await importInto('lab/tiny-token', file);
    for (const run of [pushed, imported.run]) {
      expect(run.exitCode, run.stderr).toBe(2);
      expect(run.stderr).toMatch(/error\[USAGE\]: .*token service .* refused the credentials/);
      expect(run.stderr).toContain(file);
      const printed = run.stdout + run.stderr;
      for (const secret of [wrong, auth, registry.password!]) expect(printed).not.toContain(secret);
    }
  });

  it('tokens that expire mid-upload are renewed between chunks: the push completes', async () => {
    const lifetime = 2;
    registry.tokenService!.setLifetime(lifetime);
    try {
      const started = Date.now();
      const pushed = await push('lab/tiny-expiring', undefined, [
        '--chunk-size',
        '64KiB',
        '--json',
      ]);
      const seconds = (Date.now() - started) / 1000;
      expect(pushed.exitCode, pushed.stderr).toBe(0);
      // the upload outlived several tokens, and a token was asked for again and again
      expect(seconds).toBeGreaterThan(3 * lifetime);
      expect(registry.tokenService!.issued(pushScope('lab/tiny-expiring'))).toBeGreaterThanOrEqual(
        Math.floor(seconds / lifetime),
      );
      // renewed before each chunk while still good: the registry (which logs every expired
      // token it refuses) never saw one
      expect(registry.log()).not.toMatch(/token not to be used after/);
      expect(await skopeoLayers('lab/tiny-expiring')).toEqual(diskDigests());
    } finally {
      registry.tokenService!.setLifetime(300);
    }
  });

  it('a pull-only user: push refused with a clear error, import works', async () => {
    const pushed = await push('lab/tiny-readonly', registry.pullOnlyAuthFile);
    expect(pushed.exitCode, pushed.stderr).toBe(2);
    expect(pushed.stderr).toMatch(
      /error\[USAGE\]: POST blob upload .* the token they get does not grant repository:lab\/tiny-readonly:pull,push \(401 insufficient_scope\)/,
    );
    expect(pushed.stderr).toContain(registry.pullOnlyAuthFile!);
    // the token service was asked for push and granted pull only
    const asked = registry.tokenService!.requests.filter(
      (r) =>
        r.user === 'imgctl-test-reader' &&
        r.scopes.some((s) => /^repository:lab\/tiny-readonly:.*push/.test(s)),
    );
    expect(asked.length).toBeGreaterThan(0);
    expect(
      asked.every((r) => Array.isArray(r.granted) && r.granted[0]?.actions.join() === 'pull'),
    ).toBe(true);

    const { dir, run } = await importInto('lab/tiny-token', registry.pullOnlyAuthFile);
    expect(run.exitCode, run.stderr).toBe(0);
    const verify = await execImgctl(['--store', dir, 'verify']);
    expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);
  });
});
