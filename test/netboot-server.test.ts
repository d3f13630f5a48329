/**
 * Network boot from the real `imgctl serve` over HTTP, as iPXE and the provisioning ramdisk use
 * it (docs/server.md, Network boot): the chain script, a netboot system's script whose kernel
 * and initrd URLs serve the ramdisk's bytes, its one-time token, the local-boot script for every
 * other machine, and netboot cleared in the system's file once it posts done. (Booting a VM
 * through iPXE and dnsmasq is the bare-metal e2e's.)
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  execImgctl,
  rawRequest,
  type RawResponse,
  startServer,
  type TestServer,
} from './helpers/index.ts';
import {
  makeNetbootStore,
  type NetbootStore,
  RAMDISK_CMDLINE,
  WEB01_COMMENT,
  WEB01_MAC,
  WEB02_MAC,
} from './helpers/netboot-store.ts';

const WRITE = 'write-token-0123456789abcdef';
const LOCAL_BOOT = 'sanboot --no-describe --drive 0x80 || exit\nexit\n';

let store: NetbootStore;
let server: TestServer;

beforeAll(async () => {
  store = await makeNetbootStore();
  const tokenFile = join(store.dir, '.state/write.token');
  await writeFile(tokenFile, WRITE);
  server = await startServer({
    storeDir: store.dir,
    args: ['--write-token-file', tokenFile],
  });
});

afterAll(async () => {
  await server?.stop();
  await store?.cleanup();
});

const get = (target: string, headers: Record<string, string> = {}) =>
  rawRequest(server.url, target, { headers });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const post = (body: unknown, token: string) =>
  rawRequest(server.url, '/v1/events', {
    method: 'POST',
    headers: { ...bearer(token), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

async function script(mac: string): Promise<string> {
  const r = await get(`/v1/boot/ipxe?mac=${encodeURIComponent(mac)}`);
  expect(r.status, r.text).toBe(200);
  expect(r.headers['content-type']).toBe('text/plain; charset=utf-8');
  expect(r.text.startsWith('#!ipxe\n')).toBe(true);
  return r.text;
}

/** The path and query of a URL the script names, for the test's own requests. */
const target = (url: string) => {
  const u = new URL(url);
  return `${u.pathname}${u.search}`;
};

describe('imgctl serve: network boot', () => {
  it('chains iPXE to the script of its MAC, at the address it reached the server', async () => {
    const r = await get('/v1/boot/ipxe');
    expect(r.status).toBe(200);
    expect(r.text).toContain(`\nchain ${server.url}/v1/boot/ipxe?mac=\${netX/mac} || goto local\n`);
    expect(r.text).toContain(LOCAL_BOOT);
  });

  it("boots a netboot system into the ramdisk: its kernel and initrd, with a token for that system's plan and events only", async () => {
    const text = await script(WEB01_MAC.toUpperCase());
    const kernel = /^kernel (\S+) (.*)$/m.exec(text);
    const initrd = /^initrd --name initrd (\S+)$/m.exec(text);
    expect(kernel, text).not.toBeNull();
    expect(initrd, text).not.toBeNull();
    expect(text.trimEnd().split('\n').at(-1)).toBe('boot');
    const args = kernel![2]!.split(' ');
    const token = args.find((a) => a.startsWith('imgctl.token='))!.slice('imgctl.token='.length);
    expect(token).toMatch(/^imgctl-boot-[0-9a-f]{64}$/);
    expect(args.filter((a) => !a.startsWith('imgctl.token='))).toEqual([
      'initrd=initrd',
      ...RAMDISK_CMDLINE.split(' '),
      'BOOTIF=01-52-54-00-12-34-56',
      `imgctl.server=${server.url}`,
      'imgctl.system=web01',
    ]);

    // the files, as blobs are served: whole, by range, by ETag
    const kernelFile = await get(target(kernel![1]!));
    expect(kernelFile.status).toBe(200);
    expect(kernelFile.body.equals(store.kernel)).toBe(true);
    const etag = String(kernelFile.headers.etag);
    expect(etag).toBe(`"${store.sha256(store.kernel)}"`);
    expect(kernelFile.headers['accept-ranges']).toBe('bytes');
    const range = await get(target(initrd![1]!), { range: 'bytes=1000-1999' });
    expect(range.status).toBe(206);
    expect(range.headers['content-range']).toBe(`bytes 1000-1999/${store.initrd.length}`);
    expect(range.body.equals(store.initrd.subarray(1000, 2000))).toBe(true);
    expect((await get(target(initrd![1]!))).body.equals(store.initrd)).toBe(true);
    expect((await get(target(kernel![1]!), { 'if-none-match': etag })).status).toBe(304);

    // the token: web01's plan with its secrets, web01's events; not web02's plan
    const plan = await get('/v1/plan?system=web01', bearer(token));
    expect(plan.status, plan.text).toBe(200);
    expect(plan.json<{ parameters: Record<string, unknown> }>().parameters.db_password).toBe(
      'changeme',
    );
    const other = await get('/v1/plan?system=web02', bearer(token));
    expect(other.status).toBe(403);
    expect(other.json<{ error: { message: string } }>().error.message).toBe(
      'a boot token reaches only the plan, image files, blobs and events of its system (web01)',
    );
    expect((await post({ system: 'web01', phase: 'started' }, token)).status).toBe(201);
    expect((await post({ system: 'web02', phase: 'started' }, token)).status).toBe(403);
    expect(server.log()).not.toContain(token);
  });

  it('boots the local disk, saying why, for an unknown MAC, a system with netboot false and a bad MAC', async () => {
    expect(await script('52:54:00:99:99:99')).toBe(
      `#!ipxe\n# imgctl: local boot: no system has this MAC address\n${LOCAL_BOOT}`,
    );
    expect(await script(WEB02_MAC)).toBe(
      `#!ipxe\n# imgctl: local boot: its system has netboot: false\n${LOCAL_BOOT}`,
    );
    const hostile = '52:54:00:12:34:56\nkernel http://evil/${net0/ip}';
    const bad: RawResponse = await get(`/v1/boot/ipxe?mac=${encodeURIComponent(hostile)}`);
    expect(bad.status).toBe(200);
    expect(bad.text).toBe(
      `#!ipxe\n# imgctl: local boot: the mac parameter is not a MAC address\n${LOCAL_BOOT}`,
    );
    // the log names it as no MAC; the request line escapes the target as for any request
    await server.waitForLog(
      / boot \(not a MAC\): local boot: the mac parameter is not a MAC address$/,
    );
    expect(server.log()).not.toMatch(/^kernel/m);
  });

  it("sets netboot: false in the system's file when it posts done, so its next boot is local", async () => {
    const file = join(store.dir, 'systems/web01.yaml');
    const text = await script(WEB01_MAC);
    const token = /imgctl\.token=(\S+)/.exec(text)![1]!;
    expect((await post({ system: 'web01', phase: 'done', image: 'web' }, token)).status).toBe(201);
    const yaml = await readFile(file, 'utf8');
    expect(yaml).toContain('netboot: false');
    expect(yaml.startsWith(`${WEB01_COMMENT}\n`)).toBe(true);
    await server.waitForLog(/system web01 posted done: netboot set to false/);
    expect(await script(WEB01_MAC)).toBe(
      `#!ipxe\n# imgctl: local boot: its system has netboot: false\n${LOCAL_BOOT}`,
    );
    // its token ended with the run
    expect((await get('/v1/plan?system=web01', bearer(token))).status).toBe(403);
    // set again by the real binary, it network-boots again
    const set = await execImgctl(['system', 'set', 'web01', 'netboot=true', '--store', store.dir]);
    expect(set.exitCode, set.stderr).toBe(0);
    expect(await script(WEB01_MAC)).toContain('imgctl.system=web01');
  });
});
