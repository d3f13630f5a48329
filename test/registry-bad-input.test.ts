/**
 * A registry misbehaving, against the real thing: Debian's docker-registry with TLS and htpasswd
 * auth, the built imgctl and imgagent, and a fault-injecting proxy (helpers/registry-proxy.ts)
 * in front of the registry that answers some requests itself — 500 before the real answer or
 * for good, a manifest over 4 MiB, redirects and upload sessions on another origin — and
 * forwards the rest. imgctl push and import oci:// either retry and succeed, or stop with a
 * clear error, the store and the registry's tags unchanged; an agent given a layer whose bytes
 * are not its digest falls back to imgctl serve. (imgctl import of such a layer, INTEGRITY with
 * the store unchanged: test/oci-push-import.)
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { execa } from 'execa';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest';
import { type AgentRig, startAgentRig, virtFlags } from './helpers/agent-rig.ts';
import { execImgctl, listTree, makeStore, MiB, storeState } from './helpers/index.ts';
import { makeBridge, removeDomain } from './helpers/libvirt.ts';
import {
  failFirst,
  type OtherOrigin,
  type RegistryProxy,
  redirectTo,
  serveBody,
  startOtherOrigin,
  startRegistryProxy,
} from './helpers/registry-proxy.ts';
import { OCI_MANIFEST } from '../packages/core/src/registry/registry.ts';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';

const BRIDGE = `imgrb${process.pid % 100000}`;
const VM = 'regbadmirror';

/** Requests of `method` whose path matches `path`. */
const is = (method: string, path: RegExp) => (req: IncomingMessage) =>
  req.method === method && path.test(req.url ?? '');

describe('imgctl and imgagent with a registry that misbehaves', () => {
  let rig: AgentRig;
  let registry: TestRegistry;
  let proxy: RegistryProxy;
  let storage: OtherOrigin;
  /** credentials for the registry, under its own address and the proxy's */
  let authFile: string;
  let revision: string;
  let disks: Array<{ id: string; sha256: string }>;
  const cleanups: Array<() => Promise<void>> = [];

  const imgctl = (args: string[]) =>
    execImgctl(args, { entry: join(inject('distDir'), 'imgctl.mjs') });
  const access = () => ['--registry-auth', authFile, '--registry-ca', registry.caFile!];
  const push = (repository: string, extra: string[] = [], via = proxy.url) =>
    imgctl([
      ...['--store', rig.store.dir, 'push', 'tiny-linux', `oci://${via}/${repository}`],
      ...access(),
      ...extra,
    ]);
  const importOci = (store: string, repository = 'lab/tiny-linux') =>
    imgctl([
      '--store',
      store,
      'import',
      `oci://${proxy.url}/${repository}:${revision}`,
      ...access(),
    ]);
  /** the tags the registry holds for `repository`, read from its storage */
  const tagsDir = (repository: string) =>
    join(registry.storageDir, 'docker/registry/v2/repositories', repository, '_manifests/tags');
  const tags = (repository: string) => readdir(tagsDir(repository)).catch(() => []);
  /** the manifest digest the registry's tag `revision` of `repository` points to */
  const tagged = (repository: string) =>
    readFile(join(tagsDir(repository), revision, 'current/link'), 'utf8');
  const rootSha = () => disks.find((d) => d.id === 'root')!.sha256;

  beforeAll(async () => {
    rig = await startAgentRig('imgctl-regbad-');
    const image = parse(
      await readFile(join(rig.store.dir, 'images/tiny-linux/image.yaml'), 'utf8'),
    ) as { disks: typeof disks; revision: number };
    disks = image.disks.filter((d) => d.sha256);
    revision = String(image.revision);
    registry = await startRegistry({ auth: true, tls: true });
    proxy = await startRegistryProxy(registry);
    const basic = `Basic ${Buffer.from(`${registry.user}:${registry.password}`).toString('base64')}`;
    storage = await startOtherOrigin(registry, basic);
    const { auths } = JSON.parse(await readFile(registry.authFile!, 'utf8')) as {
      auths: Record<string, unknown>;
    };
    authFile = join(rig.work.dir, 'auth.json');
    await writeFile(
      authFile,
      JSON.stringify({
        auths: { [registry.url]: auths[registry.url], [proxy.url]: auths[registry.url] },
      }),
      { mode: 0o600 },
    );
    // the appliance, pushed straight to the registry: what the proxy then serves or spoils
    const pushed = await push('lab/tiny-linux', [], registry.url);
    if (pushed.exitCode !== 0) throw new Error(`push failed:\n${pushed.stderr}`);
  }, 600_000);

  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    await storage?.close();
    await proxy?.close();
    await registry?.stop();
    await rig?.stop();
  });

  async function freshStore(): Promise<string> {
    const temp = await makeStore();
    cleanups.push(() => temp.cleanup());
    return temp.dir;
  }
  /** the store's state and files, its runtime state left out */
  async function snapshot(store: string) {
    return {
      state: await storeState(store),
      files: (await listTree(store)).filter((f) => !f.startsWith('.state/')),
    };
  }
  /** unchanged, and no import's staging area left behind */
  async function expectUnchanged(store: string, before: Awaited<ReturnType<typeof snapshot>>) {
    expect(await snapshot(store)).toEqual(before);
    const staged = (await readdir(join(store, '.state')).catch(() => [])).filter((n) =>
      n.startsWith('import-'),
    );
    expect(staged).toEqual([]);
  }
  async function expectVerifies(store: string) {
    const verify = await imgctl(['--store', store, 'verify']);
    expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);
  }

  it('a registry answering 500 then 200: push and import retry, say so, and succeed', async () => {
    expect(await tags('lab/tiny-linux')).toEqual([revision]);
    proxy.rules = [
      failFirst(1, is('HEAD', /^\/v2\/lab\/retry\/blobs\//)),
      failFirst(1, is('POST', /^\/v2\/lab\/retry\/blobs\/uploads\//)),
      failFirst(2, is('PATCH', /^\/v2\/lab\/retry\/blobs\/uploads\//)),
      failFirst(1, is('PUT', /^\/v2\/lab\/retry\/manifests\//)),
      failFirst(1, is('GET', /^\/v2\/lab\/retry\/manifests\//)),
      failFirst(2, is('GET', /^\/v2\/lab\/retry\/blobs\/sha256:/)),
    ];
    const pushed = await push('lab/retry', ['--chunk-size', '8MiB']);
    expect(pushed.exitCode, pushed.stderr).toBe(0);
    expect(pushed.stderr).toMatch(/retrying HEAD blob sha256:\w+ in lab\/retry: 500, in 0.5 s/);
    expect(pushed.stderr).toMatch(/retrying POST blob upload sha256:\w+: 500, in 0.5 s/);
    expect(pushed.stderr).toMatch(
      /PATCH blob sha256:\w+ bytes \d+-\d+: 500; asking the registry where the upload stands/,
    );
    expect(pushed.stderr).toMatch(/retrying PUT manifest lab\/retry:\d+: 500, in 0.5 s/);
    // the same manifest as a push that met no failure, under its tag
    expect(await tags('lab/retry')).toEqual([revision]);
    expect(await tagged('lab/retry')).toBe(await tagged('lab/tiny-linux'));

    const store = await freshStore();
    const run = await importOci(store, 'lab/retry');
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/retrying GET manifest lab\/retry:\d+: 500, in 0.5 s/);
    expect(run.stderr).toMatch(/retrying GET blob sha256:\w+ from lab\/retry: 500, in 1 s/);
    await expectVerifies(store);
  });

  it('a registry answering 500 for good: a clear error in seconds, the store and the tags unchanged', async () => {
    const layerGet = is('GET', new RegExp(`^/v2/lab/tiny-linux/blobs/sha256:${rootSha()}`));
    proxy.rules = [
      failFirst(Number.MAX_SAFE_INTEGER, layerGet),
      failFirst(Number.MAX_SAFE_INTEGER, is('PUT', /^\/v2\/lab\/down\/manifests\//)),
    ];
    proxy.seen.length = 0;
    // the import fails at the disk's layer, after the config and the files were staged
    const store = await freshStore();
    const before = await snapshot(store);
    let started = Date.now();
    const run = await importOci(store);
    expect(run.exitCode, run.stderr).toBe(1);
    expect(run.stderr).toContain(
      `error[FAILED]: GET blob sha256:${rootSha().slice(0, 12)} from lab/tiny-linux: ${proxy.url} answered 500 UNKNOWN (injected by the test proxy)`,
    );
    // one request and three retries, 0.5 + 1 + 2 s apart
    const layerGets = proxy.seen.filter((r) =>
      r.startsWith(`GET /v2/lab/tiny-linux/blobs/sha256:${rootSha()}`),
    );
    expect(layerGets).toHaveLength(4);
    expect(Date.now() - started).toBeLessThan(20_000);
    await expectUnchanged(store, before);

    // a push whose blobs went in (mounted from the first push) and whose manifest never did
    started = Date.now();
    const pushed = await push('lab/down', ['--mount-from', 'lab/tiny-linux']);
    expect(pushed.exitCode, pushed.stderr).toBe(1);
    expect(pushed.stderr).toMatch(
      /error\[FAILED\]: PUT manifest lab\/down:\d+: \S+ answered 500 UNKNOWN \(injected by the test proxy\)/,
    );
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(await tags('lab/down')).toEqual([]);
  });

  it('a manifest over 4 MiB is refused, one without a length read no further than 4 MiB, the store unchanged', async () => {
    const manifestGet = is('GET', /^\/v2\/lab\/tiny-linux\/manifests\//);
    const sized = serveBody(manifestGet, 5 * MiB, {
      'content-type': OCI_MANIFEST,
      'content-length': String(5 * MiB),
    });
    proxy.rules = [sized.rule];
    const store = await freshStore();
    const before = await snapshot(store);
    const run = await importOci(store);
    expect(run.exitCode, run.stderr).toBe(3);
    expect(run.stderr).toContain(
      `error[VALIDATION]: GET manifest lab/tiny-linux:${revision}: the manifest is 5242880 bytes, over the 4194304 (4 MiB) registries accept`,
    );
    await expectUnchanged(store, before);

    // 1 GiB without a Content-Length: the client counts, and hangs up past the limit
    const endless = serveBody(manifestGet, 1024 * MiB, { 'content-type': OCI_MANIFEST });
    proxy.rules = [endless.rule];
    const again = await importOci(store);
    expect(again.exitCode, again.stderr).toBe(3);
    expect(again.stderr).toContain(
      `error[VALIDATION]: GET manifest lab/tiny-linux:${revision}: the manifest is over 4194304 bytes`,
    );
    expect(endless.seen).toHaveLength(1);
    await endless.seen[0]!.over;
    expect(endless.seen[0]!.cutByClient).toBe(true);
    // what went out before the client hung up: 4 MiB and what the sockets buffer
    expect(endless.seen[0]!.sent).toBeLessThan(32 * MiB);
    await expectUnchanged(store, before);
  });

  it('a manifest or an upload sent to another origin is refused; a blob GET sent there is followed without the credentials', async () => {
    storage.requests.length = 0;
    proxy.rules = [redirectTo(storage.origin, is('GET', /^\/v2\/lab\/tiny-linux\/manifests\//))];
    const refused = await freshStore();
    const before = await snapshot(refused);
    const run = await importOci(refused);
    expect(run.exitCode, run.stderr).toBe(1);
    expect(run.stderr).toContain(
      `error[FAILED]: GET manifest lab/tiny-linux:${revision}: ${proxy.url} pointed to ${storage.origin}/v2/lab/tiny-linux/manifests/${revision}; imgctl follows the registry only within https://${proxy.url}`,
    );
    await expectUnchanged(refused, before);

    // an upload session on another origin, or a chunk redirected there: the disk and the
    // credentials are not sent to it
    proxy.rules = [
      (req, res) => {
        if (!is('POST', /^\/v2\/lab\/moved\/blobs\/uploads\//)(req)) return false;
        res.writeHead(202, { location: `${storage.origin}/v2/lab/moved/blobs/uploads/elsewhere` });
        res.end();
        return true;
      },
      redirectTo(storage.origin, is('PATCH', /^\/v2\/lab\/chunk\//)),
    ];
    const moved = await push('lab/moved');
    expect(moved.exitCode, moved.stderr).toBe(1);
    expect(moved.stderr).toMatch(
      new RegExp(
        `error\\[FAILED\\]: POST blob upload sha256:\\w+: ${proxy.url} pointed to ${storage.origin}/v2/lab/moved/blobs/uploads/elsewhere;`,
      ),
    );
    const chunk = await push('lab/chunk');
    expect(chunk.exitCode, chunk.stderr).toBe(1);
    expect(chunk.stderr).toMatch(
      new RegExp(
        `error\\[FAILED\\]: PATCH blob sha256:\\w+: ${proxy.url} pointed to ${storage.origin}/v2/lab/chunk/blobs/uploads/`,
      ),
    );
    expect(storage.requests).toEqual([]);
    expect(await tags('lab/moved')).toEqual([]);
    expect(await tags('lab/chunk')).toEqual([]);

    // blob storage elsewhere, as an S3-backed registry redirects: followed, the registry's
    // credentials left behind, the bytes checked against the digests as ever
    proxy.rules = [redirectTo(storage.origin, is('GET', /^\/v2\/lab\/tiny-linux\/blobs\//))];
    const fetched = await freshStore();
    const ok = await importOci(fetched);
    expect(ok.exitCode, ok.stderr).toBe(0);
    // the config and each disk's layer
    expect(storage.requests.length).toBeGreaterThanOrEqual(disks.length + 1);
    expect(storage.requests.map((h) => h.authorization)).toEqual(
      storage.requests.map(() => undefined),
    );
    await expectVerifies(fetched);
  });

  it('an agent given a layer whose bytes are not its digest warns and pulls that disk from imgctl serve', async () => {
    // the registry's stored copy of the root disk altered behind its back, same size
    const data = join(
      registry.storageDir,
      'docker/registry/v2/blobs/sha256',
      rootSha().slice(0, 2),
      rootSha(),
      'data',
    );
    const flipLastByte = async () => {
      const bytes = await readFile(data);
      bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
      await writeFile(data, bytes);
    };
    await flipLastByte();
    onTestFinished(flipLastByte);
    onTestFinished(() => removeDomain(VM));
    await removeDomain(VM);
    onTestFinished(await makeBridge(BRIDGE));

    const run = await execa(
      process.execPath,
      [
        join(inject('distDir'), 'imgagent.mjs'),
        ...['--server', rig.server.url, '--token-file', rig.tokenFile],
        ...['--connect', 'qemu:///system', ...virtFlags(rig.paths, BRIDGE)],
        ...['--image', 'tiny-linux', '--virt', '--virt-name', VM, '--no-start'],
        ...['--blob-mirror', `oci://${registry.url}/lab`, ...access()],
      ],
      { reject: false, env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' } },
    );
    expect(run.exitCode, run.stderr).toBe(0);
    const mirror = `oci://${registry.url}/lab/tiny-linux`;
    expect(run.stderr).toMatch(
      new RegExp(
        `warning: sha256:${rootSha().slice(0, 12)} from ${mirror}: GET blob sha256:${rootSha()} from ${registry.url}/lab/tiny-linux: the bytes received hash to sha256:\\w+; trying the server`,
      ),
    );
    for (const disk of disks.filter((d) => d.sha256 !== rootSha()))
      expect(run.stderr).toContain(`sha256:${disk.sha256.slice(0, 12)} pulled from ${mirror}`);
    // the server's copy in the cache, nothing half-written beside it
    const cached = join(rig.paths.cache, 'sha256', rootSha().slice(0, 2));
    expect(await readdir(cached)).toEqual([rootSha()]);
    const sum = createHash('sha256').update(await readFile(join(cached, rootSha())));
    expect(sum.digest('hex')).toBe(rootSha());
  });
});
