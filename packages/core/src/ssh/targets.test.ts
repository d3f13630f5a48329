import { appendFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { initStore } from '../store/images.ts';
import { storePaths } from '../store/store.ts';
import { minimalImageYaml } from '../../../../test/helpers/base-store.ts';
import { putBlob } from '../../../../test/helpers/validate-documents.ts';
import { createRelease } from '../store/releases.ts';
import { pinImageRef, readTargetsFile, resolveServerUrl, resolveTargets } from './targets.ts';

let store: string;
beforeEach(async () => {
  store = await mkdtemp(join(tmpdir(), 'imgctl-targets-'));
  await initStore(store, { name: 'test' });
});
afterEach(async () => {
  await rm(store, { recursive: true, force: true });
});

async function addSystem(name: string, extra = ''): Promise<void> {
  const yaml = `apiVersion: imgctl/v1\nkind: System\nname: ${name}\nhostname: ${name}\nimage: web\n`;
  await writeFile(storePaths.systemFile(store, name), yaml + extra);
}

describe('resolveTargets', () => {
  it("takes a bare word naming a system as that system's address, with --system", async () => {
    await addSystem('web01', 'address: admin@[2001:db8::5]:2222\n');
    expect(await resolveTargets(['web01', 'hv1', 'root@web01', 'hv1'], store)).toEqual([
      {
        label: 'web01',
        ssh: { user: 'admin', host: '2001:db8::5', port: 2222 },
        system: 'web01',
      },
      { label: 'hv1', ssh: { user: 'root', host: 'hv1', port: 22 } },
      { label: 'root@web01', ssh: { user: 'root', host: 'web01', port: 22 } },
    ]);
    // Outside a store every bare word is a host name.
    expect(await resolveTargets(['web01'], undefined)).toEqual([
      { label: 'web01', ssh: { user: 'root', host: 'web01', port: 22 } },
    ]);
  });

  it('refuses a system without an address, and one that is not valid', async () => {
    await addSystem('db01');
    await addSystem('bad01', 'address: [1, 2]\n');
    await expect(resolveTargets(['db01'], store)).rejects.toMatchObject({
      code: 'USAGE',
      message: "system 'db01' has no address to reach it over SSH",
    });
    await expect(resolveTargets(['bad01'], store)).rejects.toMatchObject({ code: 'VALIDATION' });
  });
});

describe('readTargetsFile', () => {
  it('reads one target per line, skipping blank lines and comments', async () => {
    const file = join(store, 'targets');
    await writeFile(file, '# hypervisors\nroot@hv1\n\n  hv2:2222  # rack 2\nweb01\n');
    expect(await readTargetsFile(file)).toEqual(['root@hv1', 'hv2:2222', 'web01']);
    await expect(readTargetsFile(join(store, 'nope'))).rejects.toMatchObject({
      code: 'USAGE',
      message: `--targets: cannot read ${join(store, 'nope')}: ENOENT`,
    });
  });
});

describe('resolveServerUrl', () => {
  it("is --server, else $IMGCTL_SERVER, else store.yaml's server.url", async () => {
    await appendFile(storePaths.storeFile(store), '  url: http://imgsrv:8460\n');
    expect(
      await resolveServerUrl({ given: 'http://a', fromEnv: 'http://b', storeDir: store }),
    ).toBe('http://a');
    expect(await resolveServerUrl({ fromEnv: 'http://b', storeDir: store })).toBe('http://b');
    expect(await resolveServerUrl({ storeDir: store })).toBe('http://imgsrv:8460');
  });

  it('refuses no server, a URL that is not http(s), and an invalid store.yaml', async () => {
    await expect(resolveServerUrl({})).rejects.toMatchObject({
      code: 'USAGE',
      message: 'no server: give --server URL (as the targets reach it)',
    });
    // `imgctl init` writes server.listen, not server.url.
    await expect(resolveServerUrl({ storeDir: store })).rejects.toMatchObject({ code: 'USAGE' });
    await expect(resolveServerUrl({ given: 'ssh://imgsrv' })).rejects.toMatchObject({
      code: 'USAGE',
      message: '--server: only http:// and https:// URLs are supported',
    });
    await appendFile(storePaths.storeFile(store), '  url: [1, 2]\n');
    await expect(resolveServerUrl({ storeDir: store })).rejects.toMatchObject({
      code: 'VALIDATION',
    });
  });
});

describe('pinImageRef', () => {
  it('pins a channel to the release it points at now; anything else stays as given', async () => {
    const dir = store;
    const image = minimalImageYaml({
      name: 'web',
      disks: [{ id: 'root', use: 'system', sha256: 'a'.repeat(64), blob: true }],
    });
    await mkdir(join(dir, 'images/web/records'), { recursive: true });
    await writeFile(join(dir, 'images/web/image.yaml'), image);
    await putBlob(dir, 'a'.repeat(64));
    await createRelease(dir, 'web', { channels: ['stable'] });
    const from = { storeDir: dir, server: 'http://127.0.0.1:1' };
    expect(await pinImageRef('web@stable', from)).toBe('web@1');
    expect(await pinImageRef('web@1', from)).toBe('web@1');
    expect(await pinImageRef('web', from)).toBe('web');
    await expect(pinImageRef('web@beta', from)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
