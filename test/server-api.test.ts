/**
 * imgctl serve, as agents use it: the real server process over real HTTP on 127.0.0.1, the
 * client from core, and the CLI for the same answers offline.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createClient } from '@imgctl/core/client/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  copyExampleStore,
  execImgctl,
  makeTempDir,
  rawRequest,
  runCli,
  startServer,
  type TempDir,
  type TestServer,
} from './helpers/index.ts';

const READ = 'read-token-0123456789abcdef';
const WRITE = 'write-token-0123456789abcdef';
const SECRET = 'db-secret-value-42';
const RECORD_SECRET = 'record-secret-value-7';

let store: TempDir;
let server: TestServer;
let blob: Buffer;
let hex: string;
let publicKey: string;

async function addBlob(storeDir: string, content: Buffer): Promise<string> {
  const h = createHash('sha256').update(content).digest('hex');
  await mkdir(join(storeDir, '.blobs/sha256', h.slice(0, 2)), { recursive: true });
  await writeFile(join(storeDir, '.blobs/sha256', h.slice(0, 2), h), content);
  return h;
}

beforeAll(async () => {
  store = await copyExampleStore();
  const dir = store.dir;
  blob = randomBytes(5 * 1024 * 1024 + 3);
  hex = await addBlob(dir, blob);
  const cli = async (...args: string[]) => {
    const r = await runCli([...args, '--store', dir]);
    if (r.exitCode !== 0) throw new Error(`imgctl ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  await cli('image', 'set', 'web', `disks[0].sha256=${hex}`, 'disks[0].blob=true');
  await cli('system', 'set', 'web01', `parameters.db_password=${SECRET}`);
  await cli('record', 'set', 'web', 'default', `provision.parameters.db_password=${RECORD_SECRET}`);
  const keygen = await cli('keygen', '--json');
  publicKey = await readFile(JSON.parse(keygen.stdout).public_key, 'utf8');
  await writeFile(join(dir, '.state/read.token'), READ);
  await writeFile(join(dir, '.state/write.token'), WRITE);
  server = await startServer({
    storeDir: dir,
    args: [
      '--read-token-file',
      join(dir, '.state/read.token'),
      '--write-token-file',
      join(dir, '.state/write.token'),
    ],
  });
});

afterAll(async () => {
  await server?.stop();
  await store?.cleanup();
});

const get = (target: string, token: string | null = READ, headers: Record<string, string> = {}) =>
  rawRequest(server.url, target, {
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });

describe('imgctl serve: plans', () => {
  it('serves the plan byte for byte as `imgctl plan --json` prints it, signed', async () => {
    const cli = await runCli(['plan', 'web', '--system', 'web01', '--json', '--store', store.dir]);
    expect(cli.exitCode).toBe(0);
    const anon = await rawRequest(server.url, '/v1/plan?image=web&system=web01', {
      headers: { authorization: `Bearer ${READ}` },
    });
    expect(anon.status).toBe(200);
    // The token holder gets the secret the machine needs; the CLI prints it redacted.
    expect(anon.text).toContain(SECRET);
    expect(anon.text.replace(SECRET, '<redacted>')).toBe(cli.stdout);
    expect(anon.headers['imgctl-signature']).toMatch(
      /^alg=ed25519, key_id=[0-9a-f]{16}, issued=\S+, expires=\S+, sig=/,
    );
    expect(anon.headers['cache-control']).toBe('no-store');
  });

  it('finds the system by MAC address and picks its image when none is given', async () => {
    const byMac = await get('/v1/plan?system=52:54:00:12:34:56');
    expect(byMac.json<{ system: string; image: { name: string } }>()).toMatchObject({
      system: 'web01',
      image: { name: 'web' },
    });
  });

  it('lets an agent holding the public key verify the plan, which names the blob by hash', async () => {
    const client = createClient({ baseUrl: server.url, token: READ, trustKey: publicKey });
    const { plan, signature } = await client.getPlan({ image: 'web', system: 'web01' });
    expect(plan.disks.find((d) => d.id === 'root')?.sha256).toBe(hex);
    expect(signature?.key_id).toMatch(/^[0-9a-f]{16}$/);
  });

  it('saves a signed plan that `imgctl sign --verify` checks offline, and catches tampering', async () => {
    const tmp = await makeTempDir();
    const signed = await get('/v1/plan?image=web&system=web01&format=signed');
    expect(signed.status).toBe(200);
    await writeFile(join(tmp.dir, 'plan.json'), signed.body);
    await writeFile(join(tmp.dir, 'key.pub'), publicKey);
    const ok = await execImgctl(['sign', '--verify', 'plan.json', '--key', 'key.pub'], {
      cwd: tmp.dir,
    });
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toContain(`root=sha256:${hex}`);

    const doc = signed.json<{ plan: { disks: Array<{ sha256?: string }> } }>();
    doc.plan.disks[0]!.sha256 = 'f'.repeat(64);
    await writeFile(join(tmp.dir, 'tampered.json'), JSON.stringify(doc));
    const bad = await execImgctl(['sign', '--verify', 'tampered.json', '--key', 'key.pub'], {
      cwd: tmp.dir,
    });
    expect(bad.exitCode).toBe(7);
    expect(bad.stderr).toMatch(/error\[INTEGRITY\]: the plan's signature does not match/);
  });

  it('signs a plan saved with `imgctl plan --json` using the store key', async () => {
    const tmp = await makeTempDir();
    const plan = await runCli(['plan', 'tiny-linux', '--json', '--store', store.dir]);
    await writeFile(join(tmp.dir, 'plan.json'), plan.stdout);
    const sign = await runCli(['sign', 'plan.json', '-o', 'signed.json', '--store', store.dir], {
      cwd: tmp.dir,
    });
    expect(sign.exitCode).toBe(0);
    await writeFile(join(tmp.dir, 'key.pub'), publicKey);
    const verify = await runCli(['sign', '--verify', 'signed.json', '--key', 'key.pub'], {
      cwd: tmp.dir,
    });
    expect(verify.exitCode).toBe(0);
    expect(verify.stdout).toMatch(/^valid: signed by key [0-9a-f]{16}/);
  });

  it('serves an edit made with imgctl at once, without a restart', async () => {
    const before = await get('/v1/plan?system=web01');
    expect(before.json<{ hostname: string }>().hostname).toBe('web01.example.com');
    const set = await runCli([
      'system',
      'set',
      'web01',
      'hostname=www1.example.com',
      '--store',
      store.dir,
    ]);
    expect(set.exitCode).toBe(0);
    try {
      const after = await get('/v1/plan?system=web01');
      expect(after.json<{ hostname: string }>().hostname).toBe('www1.example.com');
    } finally {
      await runCli(['system', 'set', 'web01', 'hostname=web01.example.com', '--store', store.dir]);
    }
  });

  it('serves edits to the record a plan uses and to the store defaults at once', async () => {
    type Plan = { record: string; devices: { vcpus: number } };
    const cli = (...args: string[]) => runCli([...args, '--store', store.dir]);
    const before = (await get('/v1/plan?image=web')).json<Plan>();
    expect(before.record).toBe('default');
    const vcpus = before.devices.vcpus;
    try {
      expect(
        (await cli('record', 'set', 'web', 'default', `provision.vcpus=${vcpus + 1}`)).exitCode,
      ).toBe(0);
      expect((await get('/v1/plan?image=web')).json<Plan>().devices.vcpus).toBe(vcpus + 1);
      const storeYaml = await readFile(join(store.dir, 'store.yaml'), 'utf8');
      await writeFile(
        join(store.dir, 'store.yaml'),
        storeYaml.replace('record: default', 'record: large'),
      );
      try {
        expect((await get('/v1/plan?image=web')).json<Plan>().record).toBe('large');
      } finally {
        await writeFile(join(store.dir, 'store.yaml'), storeYaml);
      }
      expect((await get('/v1/plan?image=web')).json<Plan>().record).toBe('default');
    } finally {
      await cli('record', 'set', 'web', 'default', `provision.vcpus=${vcpus}`);
    }
  });

  it('answers a bad plan request with a JSON error carrying the code of the CLI', async () => {
    const r = await get('/v1/plan?image=web&set=workers=many');
    expect(r.status).toBe(422);
    expect(r.json()).toEqual({
      error: { code: 'VALIDATION', message: expect.stringMatching(/workers/), hint: null },
    });
    const missing = await get('/v1/plan?image=nope');
    expect(missing.status).toBe(404);
    expect(missing.json<{ error: { code: string } }>().error.code).toBe('NOT_FOUND');
  });
});

describe('imgctl serve: images, records, systems, files', () => {
  const client = () => createClient({ baseUrl: server.url, token: READ });

  it('lists images and shows one with its records', async () => {
    const images = await client().listImages();
    expect(images.map((i) => i.name)).toEqual(['debian-12', 'tiny-linux', 'web']);
    const web = await client().getImage('web');
    expect(web.records).toEqual(expect.arrayContaining(['default']));
    const record = await client().getRecord('web', 'default');
    expect(record).toMatchObject({ kind: 'ImageRecord', image: 'web', name: 'default' });
  });

  it('finds systems by name, MAC address and hostname', async () => {
    for (const key of ['web01', '52:54:00:12:34:56', 'web01.example.com']) {
      expect((await client().findSystem(key)).name).toBe('web01');
    }
    const listed = await client().listSystems();
    expect(listed.map((s) => s.name)).toEqual(['tiny01', 'web01']);
    await expect(client().findSystem('52:54:00:00:00:99')).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });

  it('never shows a secret parameter in an image, record or system: only plans carry it', async () => {
    for (const target of [
      '/v1/images/web',
      '/v1/images/web/records/default',
      '/v1/systems/web01',
      '/v1/systems?mac=52:54:00:12:34:56',
      '/v1/systems?hostname=web01.example.com',
    ]) {
      const r = await get(target);
      expect(r.status, target).toBe(200);
      expect(r.text, target).not.toContain(SECRET);
      expect(r.text, target).not.toContain(RECORD_SECRET);
    }
    expect(
      (await get('/v1/systems/web01')).json<{ parameters: Record<string, string> }>().parameters,
    ).toMatchObject({ db_password: '<redacted>' });
    for (const args of [
      ['system', 'show', 'web01'],
      ['system', 'show', 'web01', '--json'],
      ['record', 'show', 'web', 'default'],
      ['record', 'show', 'web', 'default', '--json'],
    ]) {
      const shown = await runCli([...args, '--store', store.dir]);
      expect(shown.exitCode, shown.stderr).toBe(0);
      expect(shown.stdout).toContain('<redacted>');
      expect(shown.stdout).not.toMatch(new RegExp(`${SECRET}|${RECORD_SECRET}`));
    }
  });

  it('serves provision.sh, custom script sets and the kickstart rendered for a system', async () => {
    const c = client();
    expect(await c.getFile('web', 'provision.sh')).toBe(
      await readFile(join(store.dir, 'images/web/provision.sh'), 'utf8'),
    );
    const set = await get('/v1/images/web/files/custom_scripts/web');
    expect(set.json()).toMatchObject({
      set: 'web',
      source: 'image',
      files: [{ name: '10-vhost.sh' }, { name: '20-firewall.sh' }],
    });
    expect(await c.getFile('web', 'custom_scripts/base/10-motd.sh')).toBe(
      await readFile(join(store.dir, 'custom_scripts/base/10-motd.sh'), 'utf8'),
    );
    const rendered = await runCli([
      'plan',
      'web',
      '--system',
      'web01',
      '--render',
      'kickstart',
      '--store',
      store.dir,
    ]);
    expect(await c.getFile('web', 'kickstart', { system: 'web01' })).toBe(rendered.stdout);
  });
});

describe('imgctl serve: blobs', () => {
  const path = () => `/v1/blobs/sha256/${hex}`;

  it('serves the whole blob with its hash as ETag, immutable', async () => {
    const r = await get(path());
    expect(r.status).toBe(200);
    expect(r.body.equals(blob)).toBe(true);
    expect(r.headers).toMatchObject({
      etag: `"${hex}"`,
      'content-length': String(blob.length),
      'accept-ranges': 'bytes',
      'cache-control': 'public, max-age=31536000, immutable',
    });
  });

  it('answers HEAD with the headers and no body', async () => {
    const r = await rawRequest(server.url, path(), {
      method: 'HEAD',
      headers: { authorization: `Bearer ${READ}` },
    });
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(blob.length));
    expect(r.body.length).toBe(0);
  });

  it('serves byte ranges, and 416 past the end', async () => {
    const r = await get(path(), READ, { range: 'bytes=1000-1999' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 1000-1999/${blob.length}`);
    expect(r.body.equals(blob.subarray(1000, 2000))).toBe(true);
    const tail = await get(path(), READ, { range: 'bytes=-10' });
    expect(tail.body.equals(blob.subarray(-10))).toBe(true);
    const past = await get(path(), READ, { range: `bytes=${blob.length}-` });
    expect(past.status).toBe(416);
    expect(past.headers['content-range']).toBe(`bytes */${blob.length}`);
    expect(past.json<{ error: { code: string } }>().error.code).toBe('USAGE');
  });

  it('answers 304 to a client that has it', async () => {
    const r = await get(path(), READ, { 'if-none-match': `"${hex}"` });
    expect(r.status).toBe(304);
  });

  it('downloads through the client into a verified file', async () => {
    const tmp = await makeTempDir();
    const dest = join(tmp.dir, 'root.qcow2');
    const result = await createClient({ baseUrl: server.url, token: READ }).downloadBlob(hex, dest);
    expect(result.size).toBe(blob.length);
    expect((await readFile(dest)).equals(blob)).toBe(true);
  });

  it('says 404 for a blob the store does not have', async () => {
    const r = await get(`/v1/blobs/sha256/${'0'.repeat(64)}`);
    expect(r.status).toBe(404);
    expect(r.json<{ error: { code: string } }>().error.code).toBe('NOT_FOUND');
  });
});

describe('imgctl serve: events and status', () => {
  it('keeps the phases agents report, and shows them with timings over HTTP and offline', async () => {
    const agent = createClient({ baseUrl: server.url, token: WRITE });
    for (const phase of ['started', 'disks-ready', 'configured', 'defined', 'booted'] as const) {
      const event = await agent.postEvent({
        system: 'web01',
        phase,
        image: 'web',
        vm_name: 'web01',
      });
      expect(event.time).toMatch(/^\d{4}-\d\d-\d\dT/);
    }
    await agent.postEvent({ system: 'tiny01', phase: 'started', image: 'tiny-linux' });
    await agent.postEvent({
      system: 'tiny01',
      phase: 'failed',
      code: 'HOST',
      message: 'no hypervisor can run x86_64\u001b[2J\nstate:   done',
    });
    await agent.postEvent({ system: 'web01', phase: 'done' });

    const status = await createClient({ baseUrl: server.url, token: READ }).getStatus();
    expect(status.map((s) => [s.system, s.state, s.phase])).toEqual([
      ['tiny01', 'failed', 'failed'],
      ['web01', 'done', 'done'],
    ]);
    expect(status[1]!.phases.map((p) => p.phase)).toEqual([
      'started',
      'disks-ready',
      'configured',
      'defined',
      'booted',
      'done',
    ]);

    const offline = await runCli(['status', '--json', '--store', store.dir]);
    expect(JSON.parse(offline.stdout).map((s: { state: string }) => s.state)).toEqual([
      'failed',
      'done',
    ]);
    const text = await runCli(['status', '--system', 'tiny01', '--store', store.dir]);
    expect(text.stdout).toContain('state:   failed');
    // What a target sent reaches the terminal with its control characters escaped.
    expect(text.stdout).toContain('[HOST] no hypervisor can run x86_64\\x1b[2J\\x0astate:   done');
    expect(text.stdout).not.toContain('\u001b');
    const lines = (await readFile(join(store.dir, '.state/events/web01.jsonl'), 'utf8'))
      .trim()
      .split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(6);
  });

  it('shows a run with no recent event as stalled', async () => {
    const agent = createClient({ baseUrl: server.url, token: WRITE });
    await agent.postEvent({ system: 'stuck01', phase: 'started', image: 'web' });
    const fresh = await runCli(['status', '--system', 'stuck01', '--json', '--store', store.dir]);
    expect(JSON.parse(fresh.stdout)[0].state).toBe('in-progress');
    // Any run is older than 0ms by the time the command reads it.
    const stalled = await runCli([
      'status',
      '--system',
      'stuck01',
      '--stalled-after',
      '0ms',
      '--json',
      '--store',
      store.dir,
    ]);
    expect(JSON.parse(stalled.stdout)[0].state).toBe('stalled');
    const http = await get('/v1/status?system=stuck01&stalled_after=0ms');
    expect(http.json<Array<{ state: string }>>()[0]!.state).toBe('stalled');
  });

  it('logs one line per request, without tokens or --set values', async () => {
    await get('/v1/plan?image=web&set=admin_password%3Dhunter2&system=web01&set=cpus=2');
    // however the name is spelled, and with what the server would take as part of the value
    await get('/v1/plan?image=web&%73et=db_password=hunter3#hunter4&x=1');
    await server.waitForLog(/GET \/v1\/status\?system=stuck01&stalled_after=0ms 200 \d+B/);
    await server.waitForLog(
      /GET \/v1\/plan\?image=web&set=admin_password=<redacted>&system=web01&set=cpus=<redacted> \d{3} /,
    );
    await server.waitForLog(/GET \/v1\/plan\?image=web&%73et=db_password=<redacted>&x=1 \d{3} /);
    expect(server.log()).not.toMatch(/hunter[34]/);
    expect(server.log()).not.toContain('hunter2');
    expect(server.log()).toMatch(/POST \/v1\/events 201 \d+B [\d.]+ms/);
    expect(server.log()).not.toContain(READ);
    expect(server.log()).not.toContain(WRITE);
  });
});
