/**
 * imgctl serve against hostile requests: traversal in every path and query parameter, symlinks
 * planted in the store, oversized headers and bodies, malformed events, missing and wrong
 * tokens, TLS. Nothing outside the store may ever come back, and the server keeps serving.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  copyExampleStoreTo,
  makeTempDir,
  rawRequest,
  type RawResponse,
  startServer,
  type TempDir,
  type TestServer,
} from './helpers/index.ts';

const READ = 'hostile-read-token-0123456789';
const WRITE = 'hostile-write-token-0123456789';
const SECRET = 'TOP-SECRET-OUTSIDE-THE-STORE';

let root: TempDir;
let storeDir: string;
let server: TestServer;
let linkedHex: string;

beforeAll(async () => {
  root = await makeTempDir('imgctl-hostile-');
  storeDir = join(root.dir, 'store');
  await copyExampleStoreTo(storeDir);
  const outside = join(root.dir, 'outside');
  await mkdir(join(outside, 'evil'), { recursive: true });
  // Files outside the store whose content, if served, would show the secret.
  await writeFile(join(root.dir, 'secret.txt'), `${SECRET}\n`);
  await writeFile(
    join(outside, 'leak.yaml'),
    `apiVersion: imgctl/v1\nkind: System\nname: leak\nhostname: ${SECRET.toLowerCase()}\nimage: web\n`,
  );
  await writeFile(
    join(outside, 'evil/image.yaml'),
    (await readFile(join(storeDir, 'images/web/image.yaml'), 'utf8'))
      .replace('name: web', 'name: evil')
      .replace(/^label: .*$/m, `label: ${SECRET}`),
  );
  // Symlinks planted in the store, each leading outside it.
  await symlink(
    join(root.dir, 'secret.txt'),
    join(storeDir, 'images/web/custom_scripts/web/30-leak.sh'),
  );
  await writeFile(join(root.dir, 'tiny-provision.sh'), `#!/bin/sh\necho ${SECRET}\n`);
  await rm(join(storeDir, 'images/tiny-linux/provision.sh'));
  await symlink(
    join(root.dir, 'tiny-provision.sh'),
    join(storeDir, 'images/tiny-linux/provision.sh'),
  );
  await symlink(join(outside, 'leak.yaml'), join(storeDir, 'systems/leak.yaml'));
  await symlink(join(outside, 'evil'), join(storeDir, 'images/evil'));
  const secretBytes = await readFile(join(root.dir, 'secret.txt'));
  linkedHex = createHash('sha256').update(secretBytes).digest('hex');
  await mkdir(join(storeDir, '.blobs/sha256', linkedHex.slice(0, 2)), { recursive: true });
  await symlink(
    join(root.dir, 'secret.txt'),
    join(storeDir, '.blobs/sha256', linkedHex.slice(0, 2), linkedHex),
  );
  await mkdir(join(storeDir, '.state'), { recursive: true });
  await writeFile(join(storeDir, '.state/read.token'), `${READ}\n`);
  await writeFile(join(storeDir, '.state/write.token'), `${WRITE}\n`);
  server = await startServer({
    storeDir,
    args: [
      '--read-token-file',
      join(storeDir, '.state/read.token'),
      '--write-token-file',
      join(storeDir, '.state/write.token'),
    ],
  });
});

afterAll(async () => {
  await server?.stop();
  await root?.cleanup();
});

const auth = { authorization: `Bearer ${READ}` };
const get = (target: string) => rawRequest(server.url, target, { headers: auth });

function expectRefused(r: RawResponse, status?: number): void {
  expect(r.text).not.toContain(SECRET);
  expect(r.text.toLowerCase()).not.toContain(SECRET.toLowerCase());
  if (status !== undefined) expect(r.status).toBe(status);
  expect(r.status).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  const body = r.json<{ error: Record<string, unknown> }>();
  expect(Object.keys(body.error).sort()).toEqual(['code', 'hint', 'message']);
  expect(body.error.message).toEqual(expect.any(String));
}

const long = 'a'.repeat(300);

describe('imgctl serve: traversal', () => {
  it.each([
    '/v1/images/..%2f..%2fsecret.txt',
    '/v1/images/%2e%2e/records/default',
    '/v1/images/%2E%2E%2F%2E%2E%2Fsecret.txt',
    '/v1/images/web/files/../../../secret.txt',
    '/v1/images/web/files/..%2f..%2f..%2f..%2fsecret.txt',
    '/v1/images/web/files/%2fetc%2fpasswd',
    '/v1/images/web/files//etc/passwd',
    '/v1/images/web/files/provision.sh%00.txt',
    '/v1/images/web/files/custom_scripts/..%2f..%2f/x',
    '/v1/images/web/files/custom_scripts/web/..',
    '/v1/images/web/files/common/..%5c..%5csecret.txt',
    `/v1/images/${long}`,
    '/v1/images/web/records/..%2f..%2f..%2fsecret',
    '/v1/images/web/records/%00',
    '/v1/blobs/sha256/../../../secret.txt',
    '/v1/blobs/sha256/%2e%2e%2f%2e%2e%2fsecret.txt',
    `/v1/blobs/sha256/${'A'.repeat(64)}`,
    '/v1/systems/..%2fsecret',
    '/v1/systems/%2fetc%2fpasswd',
    '/..%2f..%2fsecret.txt',
    '/v1/plan?image=..%2f..%2fsecret',
    '/v1/plan?image=/etc/passwd',
    '/v1/plan?image=web&system=../../secret',
    '/v1/plan?image=web&system=%2e%2e%2fsecret',
    '/v1/plan?image=web&record=%2e%2e%2f%2e%2e%2fsecret',
    '/v1/plan?image=web%00',
    `/v1/plan?image=web&vm_name=${'a'.repeat(2000)}`,
    `/v1/plan?image=${long}`,
    '/v1/plan?image=web&image=tiny-linux',
    '/v1/plan?image=web&file=/etc/passwd',
    '/v1/systems?hostname=../../secret',
    '/v1/systems?mac=../../x',
    '/v1/images/web/files/kickstart?system=..%2Fsecret',
    '/v1/images/web/files/kickstart?record=/etc/passwd',
    '/v1/status?system=../secret',
    '/v1/status?system=a&stalled_after=/etc',
  ])('refuses %s', async (target) => {
    expectRefused(await get(target));
  });

  it('answers a method a route does not take with 405 and Allow', async () => {
    const r = await rawRequest(server.url, '/v1/images', { method: 'DELETE', headers: auth });
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET, HEAD');
  });
});

describe('imgctl serve: symlinks in the store', () => {
  it.each([
    '/v1/images/web/files/custom_scripts/web/30-leak.sh',
    '/v1/images/tiny-linux/files/provision.sh',
    '/v1/systems/leak',
    '/v1/images/evil',
    '/v1/images/evil/records',
    '/v1/plan?image=evil',
    '/v1/plan?image=web&system=leak',
  ])('refuses to follow the link in %s', async (target) => {
    expectRefused(await get(target), 403);
  });

  it('refuses a blob that is a symlink', async () => {
    expectRefused(await get(`/v1/blobs/sha256/${linkedHex}`), 403);
  });

  it('leaves linked entries out of listings', async () => {
    const images = await get('/v1/images');
    expect(images.json<Array<{ name: string }>>().map((i) => i.name)).toEqual([
      'debian-12',
      'tiny-linux',
      'web',
    ]);
    const systems = await get('/v1/systems');
    expect(systems.json<Array<{ name: string }>>().map((s) => s.name)).toEqual(['tiny01', 'web01']);
    const set = await get('/v1/images/web/files/custom_scripts/web');
    expect(set.json<{ files: Array<{ name: string }> }>().files.map((f) => f.name)).toEqual([
      '10-vhost.sh',
      '20-firewall.sh',
    ]);
    for (const r of [images, systems, set]) expect(r.text).not.toContain(SECRET);
  });
});

describe('imgctl serve: tokens', () => {
  it('asks for the read token (401), refuses a wrong one (403), takes the right one', async () => {
    const none = await rawRequest(server.url, '/v1/images');
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/^Bearer realm="imgctl"/);
    const wrong = await rawRequest(server.url, '/v1/images', {
      headers: { authorization: `Bearer ${READ.slice(0, -1)}x` },
    });
    expect(wrong.status).toBe(403);
    const short = await rawRequest(server.url, '/v1/images', {
      headers: { authorization: 'Bearer x' },
    });
    expect(short.status).toBe(403);
    const basic = await rawRequest(server.url, '/v1/images', {
      headers: { authorization: 'Basic eDp5' },
    });
    expect(basic.status).toBe(403);
    expect((await get('/v1/images')).status).toBe(200);
  });

  it('needs the write token for events: the read token is not enough', async () => {
    const event = JSON.stringify({ system: 'web01', phase: 'started' });
    const anon = await rawRequest(server.url, '/v1/events', { method: 'POST', body: event });
    expect(anon.status).toBe(401);
    const reader = await rawRequest(server.url, '/v1/events', {
      method: 'POST',
      body: event,
      headers: auth,
    });
    expect(reader.status).toBe(403);
    const writer = await rawRequest(server.url, '/v1/events', {
      method: 'POST',
      body: event,
      headers: { authorization: `Bearer ${WRITE}` },
    });
    expect(writer.status).toBe(201);
  });

  it('never writes a token to its log', () => {
    expect(server.log()).not.toContain(READ);
    expect(server.log()).not.toContain(WRITE);
  });
});

describe('imgctl serve: oversized and malformed requests', () => {
  const post = (body: string | Buffer) =>
    rawRequest(server.url, '/v1/events', {
      method: 'POST',
      body,
      headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' },
    });

  it('refuses headers over its limit with 431 and a URL over its limit with 414', async () => {
    const big = await rawRequest(server.url, '/v1/images', {
      headers: { ...auth, 'x-filler': 'a'.repeat(64 * 1024) },
    });
    expect(big.status).toBe(431);
    const url = await get(`/v1/images/${'a'.repeat(5000)}`);
    expect(url.status).toBe(414);
  });

  it('refuses a body over 64 KiB with 413', async () => {
    const r = await post(
      JSON.stringify({ system: 'web01', phase: 'started', message: 'x'.repeat(1024 * 1024) }),
    );
    expect(r.status).toBe(413);
  });

  it.each([
    ['{"system":', /not valid JSON/],
    ['[1,2]', /JSON object/],
    ['{"system":"web01","phase":"exploded"}', /'phase' must be one of/],
    ['{"system":"../../etc","phase":"started"}', /'system' must be a name/],
    ['{"system":"web01","phase":"failed"}', /needs 'code' and 'message'/],
  ])('refuses the event %s with 400', async (body, message) => {
    const r = await post(body);
    expect(r.status).toBe(400);
    expect(r.json<{ error: { message: string } }>().error.message).toMatch(message);
  });

  it('keeps serving after all of it', async () => {
    const r = await get('/v1/plan?system=web01');
    expect(r.status).toBe(200);
    expect(server.proc.exitCode).toBeNull();
  });
});

describe('imgctl serve: TLS', () => {
  it('serves HTTPS with the given certificate, read-only and redacted without tokens', async () => {
    const tmp = await makeTempDir();
    onTestFinished(() => tmp.cleanup());
    const cert = join(tmp.dir, 'cert.pem');
    const key = join(tmp.dir, 'key.pem');
    await execa('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
    const tls = await startServer({ storeDir, args: ['--tls-cert', cert, '--tls-key', key] });
    onTestFinished(() => tls.stop());
    expect(tls.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const ca = await readFile(cert);
    const plan = await rawRequest(tls.url, '/v1/plan?system=web01', { ca });
    expect(plan.status).toBe(200);
    expect(plan.json<{ parameters: Record<string, unknown> }>().parameters).toBeDefined();
    // An unknown certificate is refused by the client, and plain HTTP gets no answer from it.
    await expect(rawRequest(tls.url, '/v1/images')).rejects.toThrow(/self[- ]signed|certificate/i);
    const plain = await rawRequest(tls.url.replace('https:', 'http:'), '/v1/images').catch(
      (error: Error) => error,
    );
    expect(plain instanceof Error || plain.status === 400).toBe(true);
    await tls.waitForLog(/TLS handshake failed \S+ 127\.0\.0\.1/);
    const post = await rawRequest(tls.url, '/v1/events', {
      method: 'POST',
      body: '{"system":"web01","phase":"started"}',
      ca,
    });
    expect(post.status).toBe(403);
    expect(post.json<{ error: { message: string } }>().error.message).toMatch(/read-only/);
  });
});
