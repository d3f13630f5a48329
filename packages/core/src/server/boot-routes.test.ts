/**
 * Network boot through the server in this process (core's startServer on 127.0.0.1, a clock the
 * test moves): where boot tokens reach and where not, their expiry, the URL scripts name, and
 * what happens when netboot cannot be cleared. test/netboot-server.test.ts runs `imgctl serve`.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { rawRequest, type RawResponse } from '../../../../test/helpers/index.ts';
import {
  makeNetbootStore,
  type NetbootStore,
  RAMDISK_CMDLINE,
  WEB01_MAC,
} from '../../../../test/helpers/netboot-store.ts';
import { startServer, type ServerOptions } from './server.ts';

const WRITE = 'write-token-0123456789abcdef';
const READ = 'read-token-0123456789abcdef';

interface Rig {
  store: NetbootStore;
  url: string;
  log: string[];
  get(target: string, token?: string, headers?: Record<string, string>): Promise<RawResponse>;
  post(body: unknown, token: string): Promise<RawResponse>;
  /** the token of web01's boot script */
  bootToken(): Promise<string>;
}

async function rig(options: Partial<ServerOptions> = {}): Promise<Rig> {
  const store = await makeNetbootStore();
  const log: string[] = [];
  const server = await startServer({
    storeDir: store.dir,
    port: 0,
    writeToken: WRITE,
    log: (line) => log.push(line),
    ...options,
  });
  onTestFinished(() => server.close(0));
  const auth = (token?: string): Record<string, string> =>
    token ? { authorization: `Bearer ${token}` } : {};
  const get = (target: string, token?: string, headers: Record<string, string> = {}) =>
    rawRequest(server.url, target, { headers: { ...auth(token), ...headers } });
  return {
    store,
    url: server.url,
    log,
    get,
    post: (body, token) =>
      rawRequest(server.url, '/v1/events', {
        method: 'POST',
        headers: { ...auth(token), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      }),
    async bootToken() {
      const script = (await get(`/v1/boot/ipxe?mac=${WEB01_MAC}`)).text;
      const token = /imgctl\.token=(\S+)/.exec(script)?.[1];
      if (!token) throw new Error(`no token in:\n${script}\nlog:\n${log.join('\n')}`);
      return token;
    },
  };
}

describe('GET /v1/boot/ipxe: the URL scripts name', () => {
  it("is the Host the request came to, else this socket's address, else store.yaml's server.url", async () => {
    const r = await rig();
    const chain = async (host?: string) =>
      (await r.get('/v1/boot/ipxe', undefined, host === undefined ? {} : { host })).text;
    expect(await chain('pxe.lan:8080')).toContain(
      'chain http://pxe.lan:8080/v1/boot/ipxe?mac=${netX/mac} || goto local',
    );
    // not a host: never written into the script
    const odd = await chain('pxe.lan/${net0/ip}');
    expect(odd).not.toContain('net0/ip');
    expect(odd).toContain(`chain ${r.url}/v1/boot/ipxe?mac=\${netX/mac}`);
    const config = join(r.store.dir, 'store.yaml');
    const text = await readFile(config, 'utf8');
    await writeFile(
      config,
      text.replace('server:\n', 'server:\n  url: http://boot.example.com/\n'),
    );
    expect(await chain('pxe.lan:8080')).toContain(
      'chain http://boot.example.com/v1/boot/ipxe?mac=${netX/mac}',
    );
    expect(await r.bootToken()).toMatch(/^imgctl-boot-[0-9a-f]{64}$/);
    expect((await r.get(`/v1/boot/ipxe?mac=${WEB01_MAC}`)).text).toContain(
      'imgctl.server=http://boot.example.com imgctl.system=web01',
    );
  });
});

describe('boot tokens', () => {
  it("reach their system's plan (with secrets), image, files and disk blobs, and nothing else", async () => {
    const r = await rig({ readToken: READ });
    // the boot routes need no read token: iPXE sends none
    const script = await r.get(`/v1/boot/ipxe?mac=${WEB01_MAC}`);
    expect(script.status).toBe(200);
    expect((await r.get('/v1/boot/kernel')).status).toBe(200);
    expect((await r.get('/v1/plan?system=web01')).status).toBe(401);
    const token = await r.bootToken();
    const plan = await r.get('/v1/plan?system=web01', token);
    expect(plan.status, plan.text).toBe(200);
    expect(plan.json<{ parameters: Record<string, unknown> }>().parameters.db_password).toBe(
      'changeme',
    );
    expect((await r.get(`/v1/plan?system=${WEB01_MAC}`, token)).status).toBe(200);
    const diskHex = r.store.sha256(r.store.disk);
    for (const target of [
      '/v1/images/web',
      '/v1/images/web/records/default',
      '/v1/images/web/files/provision.sh',
      '/v1/images/web/files/kickstart?system=web01',
      `/v1/blobs/sha256/${diskHex}`,
    ])
      expect((await r.get(target, token)).status, target).toBe(200);
    for (const target of [
      '/v1/plan?system=web02',
      '/v1/plan?image=web',
      '/v1/plan?system=web01&image=other',
      '/v1/images/web/files/kickstart?system=web02',
      `/v1/blobs/sha256/${r.store.sha256(r.store.kernel)}`,
      '/v1/systems',
      '/v1/systems/web01',
      '/v1/status',
      '/v1',
    ]) {
      const refused = await r.get(target, token);
      expect(refused.status, target).toBe(403);
      expect(refused.text).toContain(
        'reaches only the plan, image files, blobs and events of its system (web01)',
      );
    }
    expect((await r.post({ system: 'web02', phase: 'started' }, token)).status).toBe(403);
    expect((await r.post({ system: 'web01', phase: 'started' }, token)).status).toBe(201);
    // the write token is not a boot token: it still posts for any system
    expect((await r.post({ system: 'web02', phase: 'started' }, WRITE)).status).toBe(201);
  });

  it('end at their expiry, and one that ended is refused, never taken as no token', async () => {
    let now = Date.parse('2026-01-05T10:00:00Z');
    const r = await rig({ now: () => new Date(now), bootTokenTtlMs: 10 * 60_000 });
    const token = await r.bootToken();
    now += 10 * 60_000 - 1;
    expect((await r.get('/v1/plan?system=web01', token)).status).toBe(200);
    now += 1;
    // the server needs no read token, yet the plan is not served redacted to an ended token
    const ended = await r.get('/v1/plan?system=web01', token);
    expect(ended.status).toBe(403);
    expect(ended.text).toContain('this boot token has ended');
    expect(
      (await r.post({ system: 'web01', phase: 'failed', code: 'FAILED', message: 'x' }, token))
        .status,
    ).toBe(403);
  });

  it('end when their system posts done or failed', async () => {
    const r = await rig();
    for (const phase of ['failed', 'done']) {
      const token = await r.bootToken();
      const body = phase === 'failed' ? { code: 'HOST', message: 'no disk' } : {};
      expect((await r.post({ system: 'web01', phase, ...body }, token)).status).toBe(201);
      expect((await r.get('/v1/plan?system=web01', token)).status).toBe(403);
    }
    expect(r.log.join('\n')).not.toMatch(/imgctl-boot-[0-9a-f]/);
  });
});

describe('imgagent --via-ramdisk', () => {
  it('reads the ramdisk and, with the write token, gets a boot token for one system', async () => {
    const r = await rig({ now: () => new Date('2026-01-05T10:00:00Z') });
    const info = await r.get('/v1/boot/ramdisk');
    expect(info.status).toBe(200);
    expect(info.json()).toEqual({
      kernel: { sha256: r.store.sha256(r.store.kernel), size: r.store.kernel.length },
      initrd: { sha256: r.store.sha256(r.store.initrd), size: r.store.initrd.length },
      cmdline: RAMDISK_CMDLINE,
    });
    const issue = (body: unknown, token: string) =>
      rawRequest(r.url, '/v1/boot/tokens', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    // web02 has netboot: false: this token is for a machine switched without a network boot
    const issued = await issue({ system: 'web02' }, WRITE);
    expect(issued.status, issued.text).toBe(201);
    const { token, expires } = issued.json<{ token: string; expires: string }>();
    expect(expires).toBe('2026-01-05T11:00:00.000Z');
    expect((await r.get('/v1/plan?system=web02', token)).status).toBe(200);
    expect((await r.get('/v1/plan?system=web01', token)).status).toBe(403);
    // a boot token never makes another
    expect((await issue({ system: 'web02' }, token)).status).toBe(403);
    expect((await issue({ system: 'nope' }, WRITE)).status).toBe(404);
    expect((await issue({ system: 'web02', extra: 1 }, WRITE)).status).toBe(400);
    expect((await issue({ system: 'web02' }, 'not-the-write-token-at-all')).status).toBe(403);
    expect(r.log.join('\n')).not.toContain(token);
  });

  it('logs the bytes a streamed blob sent, a Range too', async () => {
    const r = await rig();
    const hex = r.store.sha256(r.store.kernel);
    const whole = await r.get(`/v1/blobs/sha256/${hex}`);
    expect(whole.status).toBe(200);
    const part = await r.get(`/v1/blobs/sha256/${hex}`, undefined, { range: 'bytes=10-' });
    expect(part.status).toBe(206);
    await new Promise((done) => setTimeout(done, 50));
    const lines = r.log.filter((l) => l.startsWith(`GET /v1/blobs/sha256/${hex}`));
    expect(lines.map((l) => l.split(' ').slice(2, 4).join(' '))).toEqual([
      `200 ${r.store.kernel.length}B`,
      `206 ${r.store.kernel.length - 10}B`,
    ]);
  });
});

describe('netboot', () => {
  it('is refused by a server without a write token, which could not clear it', async () => {
    const r = await rig({ writeToken: undefined });
    const script = (await r.get(`/v1/boot/ipxe?mac=${WEB01_MAC}`)).text;
    expect(script).toContain(
      '# imgctl: local boot: this server has no write token: it could not clear netboot once the system is provisioned',
    );
    expect(script).not.toContain('imgctl.token');
  });

  it('boots the local disk while the ramdisk is missing or cannot go into a script', async () => {
    const r = await rig();
    const file = join(r.store.dir, 'ramdisk/ramdisk.yaml');
    const built = await readFile(file, 'utf8');
    const reason = async () =>
      /^# imgctl: local boot: (.*)$/m.exec(
        (await r.get(`/v1/boot/ipxe?mac=${WEB01_MAC}`)).text,
      )?.[1];
    await writeFile(file, built.replace(/^cmdline: .*$/m, 'cmdline: "console=ttyS0 x=${y}"'));
    expect(await reason()).toBe(
      "ramdisk/ramdisk.yaml's cmdline holds characters an iPXE script cannot",
    );
    await rm(join(r.store.dir, '.blobs/sha256', r.store.sha256(r.store.initrd).slice(0, 2)), {
      recursive: true,
    });
    await writeFile(file, built);
    expect(await reason()).toBe("the ramdisk's kernel or initrd is missing from .blobs/");
    await writeFile(file, built.replace(/^kind: Ramdisk$/m, 'kind: Nope'));
    expect(await reason()).toBe(
      'its system or the ramdisk cannot be read (the server log says why)',
    );
    expect(r.log.join('\n')).toContain('ramdisk/ramdisk.yaml is not valid');
    await rm(file);
    expect(await reason()).toBe('no ramdisk is built in this store');
    const kernel = await r.get('/v1/boot/kernel');
    expect(kernel.status).toBe(404);
    expect(kernel.text).toContain('no ramdisk is built in this store');
  });

  it("boots the local disk after done even when the system's file cannot be edited, until the file changes", async () => {
    const r = await rig();
    const file = join(r.store.dir, 'systems/web01.yaml');
    // web01's record is gone: its file no longer passes the checks an edit makes
    await rm(join(r.store.dir, 'images/web/records/default.yaml'));
    const token = await r.bootToken();
    expect((await r.post({ system: 'web01', phase: 'done' }, token)).status).toBe(201);
    expect(await readFile(file, 'utf8')).toContain('netboot: true');
    expect(r.log.join('\n')).toMatch(
      /system web01 posted done, but netboot could not be set to false in systems\/web01\.yaml: .*; its network boots go to the local disk until that file changes/,
    );
    const script = (await r.get(`/v1/boot/ipxe?mac=${WEB01_MAC}`)).text;
    expect(script).toContain(
      '# imgctl: local boot: its system posted done, but netboot: true could not be cleared in its file',
    );
    await writeFile(file, `${await readFile(file, 'utf8')}# fixed by hand\n`);
    expect((await r.get(`/v1/boot/ipxe?mac=${WEB01_MAC}`)).text).toContain('imgctl.system=web01');
  });
});
