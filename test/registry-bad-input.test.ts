/**
 * A registry misbehaving, against the real thing: Debian's docker-registry with htpasswd auth
 * behind a fault-injecting proxy (helpers/registry-proxy.ts) that answers some requests itself —
 * 500 before the real answer, a manifest over 4 MiB, redirects to another origin — and forwards
 * the rest. imgctl push and import oci:// either retry and succeed, or stop with a clear error
 * and the store unchanged. (A layer whose content is not its digest: test/oci-push-import.)
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execImgctl, listTree, makeStore, storeState, type TempDir } from './helpers/index.ts';
import {
  failFirst,
  type ProxyRule,
  type RegistryProxy,
  startOtherOrigin,
  startRegistryProxy,
} from './helpers/registry-proxy.ts';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';
import { type BuiltAppliance, buildApplianceStore } from './helpers/seed.ts';

describe('imgctl and a registry that misbehaves', () => {
  let built: BuiltAppliance;
  let registry: TestRegistry;
  let proxy: RegistryProxy;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    built = await buildApplianceStore();
    registry = await startRegistry({ auth: true });
    proxy = await startRegistryProxy(registry.url);
    // the appliance, pushed straight to the registry: what the proxy then serves or spoils
    const push = await execImgctl([
      ...['--store', built.store.dir, 'push', 'tiny-linux', `oci://${registry.url}/lab/tiny`],
      ...['--registry-auth', registry.authFile!, '--insecure-http'],
    ]);
    if (push.exitCode !== 0) throw new Error(`push failed:\n${push.stderr}`);
  }, 600_000);

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    await proxy?.close();
    await registry?.stop();
    await built?.store.cleanup();
  });

  /** The registry's credentials for the proxy's address: it forwards them. */
  async function proxyAuth(): Promise<string> {
    const config = JSON.parse(await readFile(registry.authFile!, 'utf8')) as {
      auths: Record<string, unknown>;
    };
    const file = join(built.store.dir, '.state', 'proxy-auth.json');
    await writeFile(file, JSON.stringify({ auths: { [proxy.url]: config.auths[registry.url] } }), {
      mode: 0o600,
    });
    return file;
  }
  async function freshStore(): Promise<TempDir> {
    const temp = await makeStore();
    cleanups.push(() => temp.cleanup());
    return temp;
  }
  async function importThroughProxy(store: string, tag = built.revision) {
    return execImgctl([
      ...['--store', store, 'import', `oci://${proxy.url}/lab/tiny:${tag}`],
      ...['--registry-auth', await proxyAuth(), '--insecure-http'],
    ]);
  }
  /** the store's state and files, the import staging area left out */
  async function snapshot(store: string) {
    return {
      state: await storeState(store),
      files: (await listTree(store)).filter((f) => !f.startsWith('.state/')),
    };
  }
  async function expectUnchanged(store: string, before: Awaited<ReturnType<typeof snapshot>>) {
    expect(await snapshot(store)).toEqual(before);
    const staged = (await readdir(join(store, '.state')).catch(() => [])).filter((n) =>
      n.startsWith('import-'),
    );
    expect(staged).toEqual([]);
  }
  const isManifestGet = (path: string) => (req: { method?: string; url?: string }) =>
    req.method === 'GET' && (req.url ?? '').startsWith(path);

  it('a registry answering 500 then 200: push and import retry, say so, and succeed', async () => {
    proxy.rules = [
      failFirst(2, (req) => req.method === 'PATCH'),
      failFirst(1, (req) => req.method === 'PUT' && (req.url ?? '').includes('/manifests/')),
      failFirst(1, isManifestGet('/v2/lab/retry/manifests/')),
      failFirst(2, (req) => req.method === 'GET' && (req.url ?? '').includes('/blobs/sha256:')),
    ];
    proxy.seen.length = 0;
    const push = await execImgctl([
      ...['--store', built.store.dir, 'push', 'tiny-linux', `oci://${proxy.url}/lab/retry`],
      ...['--registry-auth', await proxyAuth(), '--insecure-http', '--chunk-size', '8MiB'],
    ]);
    expect(push.exitCode, push.stderr).toBe(0);
    expect(push.stderr).toMatch(/PATCH blob sha256:\w+ bytes \d+-\d+: 500; asking the registry/);
    expect(push.stderr).toMatch(/retrying PUT manifest .*: 500, in 0.5 s/);

    const other = await freshStore();
    const run = await execImgctl([
      ...['--store', other.dir, 'import', `oci://${proxy.url}/lab/retry:${built.revision}`],
      ...['--registry-auth', await proxyAuth(), '--insecure-http'],
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/retrying GET manifest .*: 500/);
    expect(run.stderr).toMatch(/retrying GET blob .*: 500/);
    const verify = await execImgctl(['--store', other.dir, 'verify']);
    expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);
  });

  it('a registry answering 500 for good: a clear error in bounded time, the store unchanged', async () => {
    proxy.rules = [failFirst(Number.MAX_SAFE_INTEGER, isManifestGet('/v2/lab/tiny/manifests/'))];
    const other = await freshStore();
    const before = await snapshot(other.dir);
    const started = Date.now();
    const run = await importThroughProxy(other.dir);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/error\[FAILED\]: GET manifest .*500/);
    expect(Date.now() - started).toBeLessThan(60_000);
    await expectUnchanged(other.dir, before);
  });

  it('a manifest over 4 MiB (sent without a length) is refused, the store unchanged', async () => {
    let sent = 0;
    proxy.rules = [
      (req, res) => {
        if (!isManifestGet('/v2/lab/tiny/manifests/')(req)) return false;
        // 5 MiB without a length: the client has to count, and stop
        res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
        const piece = Buffer.alloc(64 * 1024, 0x20);
        const write = () => {
          while (sent < 5 * 1024 * 1024 && !res.destroyed) {
            sent += piece.length;
            if (!res.write(piece)) return void res.once('drain', write);
          }
          res.end();
        };
        write();
        return true;
      },
    ];
    const other = await freshStore();
    const before = await snapshot(other.dir);
    const run = await importThroughProxy(other.dir);
    expect(run.exitCode, run.stderr).not.toBe(0);
    expect(run.stderr).toMatch(/over the 4194304 \(4 MiB\) registries accept|over 4 MiB/);
    await expectUnchanged(other.dir, before);
  });

  it('a manifest redirected to another origin is refused; a blob redirected there is fetched without the credentials', async () => {
    const basic = `Basic ${Buffer.from(`${registry.user}:${registry.password}`).toString('base64')}`;
    const storage = await startOtherOrigin(registry.url, basic);
    cleanups.push(storage.close);
    const redirect =
      (match: (req: { method?: string; url?: string }) => boolean): ProxyRule =>
      (req, res) => {
        if (!match(req)) return false;
        res.writeHead(307, { location: `${storage.origin}${req.url}` });
        res.end();
        return true;
      };

    proxy.rules = [redirect(isManifestGet('/v2/lab/tiny/manifests/'))];
    const refused = await freshStore();
    const before = await snapshot(refused.dir);
    const run = await importThroughProxy(refused.dir);
    expect(run.exitCode).not.toBe(0);
    expect(run.stderr).toMatch(/GET manifest .*localhost:\d+/);
    expect(storage.requests).toEqual([]);
    await expectUnchanged(refused.dir, before);

    // blob storage elsewhere, as an S3-backed registry redirects: followed, the registry's
    // credentials left behind, the bytes checked against the digests as ever
    proxy.rules = [redirect((req) => req.method === 'GET' && (req.url ?? '').includes('/blobs/'))];
    const fetched = await freshStore();
    const ok = await importThroughProxy(fetched.dir);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(storage.requests.length).toBeGreaterThanOrEqual(built.disks.length + 1);
    expect(storage.requests.map((h) => h.authorization)).toEqual(
      storage.requests.map(() => undefined),
    );
    const verify = await execImgctl(['--store', fetched.dir, 'verify']);
    expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);
  });
});
