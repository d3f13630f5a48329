import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import { findCredentials, parseChallenges } from './auth.ts';
import { parseOciReference } from './reference.ts';
import { openRegistry } from './registry.ts';

const b64 = (text: string) => Buffer.from(text).toString('base64');
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imgctl-registry-auth-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function authFile(content: unknown, name = 'auth.json'): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

describe('findCredentials', () => {
  it('reads auths.HOST.auth, username/password, and the longest HOST/PATH key a repository is under', async () => {
    const file = await authFile({
      auths: {
        'https://reg.example:5000': { auth: b64('alice:pa:ss') },
        'reg.example:5000/team': { username: 'bob', password: 'secret' },
        'reg.example:5000/team/app': { auth: b64('carol:c') },
      },
    });
    const at = (repository: string) =>
      findCredentials('reg.example:5000', repository, { authFile: file });
    expect((await at('other')).credentials).toEqual({ username: 'alice', password: 'pa:ss' });
    expect((await at('team/web')).credentials).toEqual({ username: 'bob', password: 'secret' });
    expect((await at('team/app')).credentials).toEqual({ username: 'carol', password: 'c' });
    expect((await at('teamx/app')).credentials).toEqual({ username: 'alice', password: 'pa:ss' });
    expect(
      (await findCredentials('other:5000', 'x', { authFile: file })).credentials,
    ).toBeUndefined();
  });

  it('takes $REGISTRY_AUTH_FILE, else ~/.docker/config.json when it exists, else nothing', async () => {
    const env = await authFile({ auths: { h: { auth: b64('env:e') } } }, 'env.json');
    expect(
      (await findCredentials('h', 'r', { env: { REGISTRY_AUTH_FILE: env }, home: dir })).credentials
        ?.username,
    ).toBe('env');
    expect(await findCredentials('h', 'r', { env: {}, home: dir })).toEqual({ notes: [] });
    await mkdir(join(dir, '.docker'));
    await writeFile(
      join(dir, '.docker', 'config.json'),
      JSON.stringify({ auths: { h: { auth: b64('home:h') } } }),
    );
    const found = await findCredentials('h', 'r', { env: {}, home: dir });
    expect(found.credentials?.username).toBe('home');
    expect(found.file).toBe(join(dir, '.docker', 'config.json'));
  });

  it('notes an identitytoken or a credential helper it does not use', async () => {
    const file = await authFile({
      auths: { h: { identitytoken: 'tok' } },
      credHelpers: { h: 'ecr-login' },
    });
    const found = await findCredentials('h', 'r', { authFile: file });
    expect(found.credentials).toBeUndefined();
    expect(found.notes.join('\n')).toMatch(/credential helpers are not used/);
    expect(found.notes.join('\n')).toMatch(/the identitytoken for h is not used/);
  });

  it('refuses a file that cannot be read or used, without showing what it holds', async () => {
    const bad = await authFile({ auths: { h: { auth: b64('no-colon-here') } } });
    const e1 = await findCredentials('h', 'r', { authFile: bad }).catch((e: ImgctlError) => e);
    expect(e1).toBeInstanceOf(ImgctlError);
    expect((e1 as ImgctlError).code).toBe('USAGE');
    expect((e1 as ImgctlError).message).toBe(
      `auths["h"].auth in ${bad} is not the base64 of user:password`,
    );
    const notJson = await authFile('{"auths": secret-stuff', 'broken.json');
    const e2 = (await findCredentials('h', 'r', { authFile: notJson }).catch(
      (e: unknown) => e,
    )) as ImgctlError;
    expect(e2.message).toBe(`cannot read the registry auth file ${notJson}: it is not JSON`);
    const e3 = (await findCredentials('h', 'r', { authFile: join(dir, 'missing') }).catch(
      (e: unknown) => e,
    )) as ImgctlError;
    expect(e3.message).toMatch(/missing: ENOENT$/);
  });
});

describe('parseChallenges', () => {
  it('reads bearer and basic challenges with quoted and bare parameters', () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example/token',
          service: 'reg',
          scope: 'repository:a/b:pull,push',
        },
      },
    ]);
    expect(
      parseChallenges('Basic realm="x \\"y\\"", Bearer realm=https://t/, error=invalid_token'),
    ).toEqual([
      { scheme: 'basic', params: { realm: 'x "y"' } },
      { scheme: 'bearer', params: { realm: 'https://t/', error: 'invalid_token' } },
    ]);
    expect(parseChallenges('')).toEqual([]);
  });
});

interface Server {
  host: string;
  seen: { url: string; authorization?: string }[];
  close(): Promise<void>;
}

async function serve(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Server> {
  const seen: Server['seen'] = [];
  const server = createServer((req, res) => {
    seen.push({ url: req.url!, authorization: req.headers.authorization });
    req.resume();
    req.on('end', () => handler(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('challenges, against a local registry and token service', () => {
  let servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
  });

  it('gets a bearer token from the realm with basic auth, caches it per scope, fetches again on 401', async () => {
    let issued = 0;
    const valid = new Set<string>();
    const tokens = await serve((req, res) => {
      if (req.headers.authorization !== `Basic ${b64('u:pw')}`)
        return void res.writeHead(401).end();
      const token = `t${++issued}`;
      valid.add(token);
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ token, expires_in: 300 }));
    });
    const registry = await serve((req, res) => {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (token === undefined || !valid.has(token)) {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="fake",scope="repository:team/app:pull"`,
        });
        return void res.end();
      }
      res.writeHead(404).end();
    });
    servers.push(tokens, registry);
    const file = await authFile({ auths: { [registry.host]: { auth: b64('u:pw') } } });
    const client = openRegistry(parseOciReference(`oci://${registry.host}/team/app`), {
      authFile: file,
      insecureHttp: true,
    });
    const digest = `sha256:${'0'.repeat(64)}`;
    expect(await client.hasBlob('team/app', digest)).toBe(false);
    expect(await client.hasBlob('team/app', digest)).toBe(false);
    // one 401, one token, then the cached token straight away
    expect(registry.seen.map((s) => s.authorization)).toEqual([
      undefined,
      'Bearer t1',
      'Bearer t1',
    ]);
    expect(tokens.seen[0]!.url).toBe('/token?service=fake&scope=repository%3Ateam%2Fapp%3Apull');
    valid.clear(); // the token expired early
    expect(await client.hasBlob('team/app', digest)).toBe(false);
    expect(registry.seen.slice(3).map((s) => s.authorization)).toEqual(['Bearer t1', 'Bearer t2']);
  });

  /**
   * HEADs of a blob through a registry whose token service adds `lifetime` to each token, the
   * clock moved on by each of `waits` (ms) before its HEAD: the Authorization each request had.
   */
  async function tokensUsed(lifetime: { expires_in?: number }, waits: number[]) {
    let issued = 0;
    const tokens = await serve((_req, res) => {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ token: `t${++issued}`, ...lifetime }));
    });
    const registry = await serve((req, res) => {
      if (!req.headers.authorization) {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="fake",scope="repository:team/app:pull"`,
        });
        return void res.end();
      }
      res.writeHead(404).end();
    });
    servers.push(tokens, registry);
    const client = openRegistry(parseOciReference(`oci://${registry.host}/team/app`), {
      authFile: await authFile({ auths: { [registry.host]: { auth: b64('u:pw') } } }),
      insecureHttp: true,
    });
    const digest = `sha256:${'3'.repeat(64)}`;
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      for (const wait of waits) {
        vi.setSystemTime(Date.now() + wait);
        await client.hasBlob('team/app', digest);
      }
    } finally {
      vi.useRealTimers();
    }
    return registry.seen.map((s) => s.authorization);
  }

  it('uses a short-lived token for half its lifetime, then fetches a new one before the request', async () => {
    expect(await tokensUsed({ expires_in: 4 }, [0, 0, 2_500])).toEqual([
      undefined,
      'Bearer t1',
      'Bearer t1',
      'Bearer t2',
    ]);
  });

  it('takes a token that gives no lifetime to last 60 s, as the token spec says', async () => {
    // renewed 10 s before the 60 s are over, not used for ever
    expect(await tokensUsed({}, [0, 45_000, 10_000])).toEqual([
      undefined,
      'Bearer t1',
      'Bearer t1',
      'Bearer t2',
    ]);
  });

  it('asks the token service again after a 503 or a dropped connection, saying so', async () => {
    let asked = 0;
    const tokens = await serve((req, res) => {
      asked += 1;
      if (asked === 1) return void res.writeHead(503, { 'retry-after': '0' }).end();
      if (asked === 2) return void req.socket.destroy();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"t1"}');
    });
    const registry = await serve((req, res) => {
      if (req.headers.authorization === 'Bearer t1') return void res.writeHead(404).end();
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="fake"`,
      });
      res.end();
    });
    servers.push(tokens, registry);
    const lines: string[] = [];
    const client = openRegistry(parseOciReference(`oci://${registry.host}/team/app`), {
      authFile: await authFile({ auths: { [registry.host]: { auth: b64('u:pw') } } }),
      insecureHttp: true,
      log: (line) => lines.push(line),
    });
    expect(await client.hasBlob('team/app', `sha256:${'5'.repeat(64)}`)).toBe(false);
    expect(asked).toBe(3);
    expect(lines).toEqual([
      expect.stringMatching(
        /^retrying the token request to http:\/\/127\.0\.0\.1:\d+: 503, in 0 s$/,
      ),
      expect.stringMatching(
        /^retrying the token request to http:\/\/127\.0\.0\.1:\d+: \w+, in 1 s$/,
      ),
    ]);
  });

  it('says which access the token lacks when the registry answers insufficient_scope', async () => {
    let issued = 0;
    const tokens = await serve((_req, res) => {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ token: `pull-only-${++issued}` }));
    });
    // a token lets the user look (HEAD) but not start an upload (POST)
    const registry = await serve((req, res) => {
      if (req.method === 'HEAD' && req.headers.authorization) return void res.writeHead(404).end();
      const error = req.headers.authorization ? ',error="insufficient_scope"' : '';
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="fake",scope="repository:team/app:pull,push"${error}`,
      });
      res.end();
    });
    servers.push(tokens, registry);
    const file = await authFile({ auths: { [registry.host]: { auth: b64('reader:pw') } } });
    const client = openRegistry(parseOciReference(`oci://${registry.host}/team/app`), {
      authFile: file,
      insecureHttp: true,
    });
    const error = (await client
      .pushBlob('team/app', {
        digest: `sha256:${'4'.repeat(64)}`,
        size: 1,
        open: () => Readable.from([Buffer.from('x')]),
      })
      .catch((e: unknown) => e)) as ImgctlError;
    expect(error).toBeInstanceOf(ImgctlError);
    expect(error.code).toBe('USAGE');
    expect(error.message).toContain(
      `refused the credentials for ${registry.host} in ${file}: the token they get does not grant repository:team/app:pull,push (401 insufficient_scope)`,
    );
    expect(error.hint).toMatch(/gives that user less than this needs/);
  });

  it('says when an anonymous token is not enough, and how to give credentials', async () => {
    const tokens = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"anonymous"}');
    });
    const registry = await serve((_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${tokens.host}/t"` }).end();
    });
    servers.push(tokens, registry);
    const client = openRegistry(parseOciReference(`oci://${registry.host}/team/app`), {
      authFile: await authFile({ auths: {} }),
      insecureHttp: true,
    });
    const error = (await client
      .hasBlob('team/app', `sha256:${'2'.repeat(64)}`)
      .catch((e: unknown) => e)) as ImgctlError;
    expect(error.code).toBe('USAGE');
    expect(error.message).toMatch(/refused access without credentials \(401\)$/);
    expect(error.hint).toMatch(/^give credentials for 127\.0\.0\.1:\d+ with --registry-auth FILE/);
    expect(registry.seen.map((s) => s.authorization)).toEqual([undefined, 'Bearer anonymous']);
  });

  it('says the credentials were refused, naming the file and never the password', async () => {
    const registry = await serve((_req, res) => {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"' }).end();
    });
    servers.push(registry);
    const file = await authFile({
      auths: { [registry.host]: { auth: b64('user:hunter2-secret') } },
    });
    const client = openRegistry(parseOciReference(`oci://${registry.host}/team/app`), {
      authFile: file,
      insecureHttp: true,
    });
    const error = (await client
      .getManifest('team/app', 'v1', ['application/json'])
      .catch((e: unknown) => e)) as ImgctlError;
    expect(error).toBeInstanceOf(ImgctlError);
    expect(error.code).toBe('USAGE');
    expect(error.message).toBe(
      `GET manifest team/app:v1: ${registry.host} refused the credentials for ${registry.host} in ${file} (401)`,
    );
    expect(`${error.message} ${error.hint}`).not.toMatch(/hunter2|dXNlcjpodW50ZXIy/);
    expect(registry.seen.map((s) => s.authorization?.split(' ')[0])).toEqual([undefined, 'Basic']);

    const none = openRegistry(parseOciReference(`oci://${registry.host}/team/app`), {
      authFile: await authFile({ auths: {} }, 'empty.json'),
      insecureHttp: true,
    });
    const missing = (await none
      .hasBlob('team/app', `sha256:${'1'.repeat(64)}`)
      .catch((e: unknown) => e)) as ImgctlError;
    expect(missing.message).toBe(`${registry.host} asks for credentials and there are none`);
    expect(missing.hint).toMatch(/add "auths"/);
  });
});
