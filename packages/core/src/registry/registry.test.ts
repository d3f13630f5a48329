/**
 * The registry client against a small in-memory registry on node:http that behaves like
 * distribution 2.8 (appends PATCH bodies whatever their Content-Range, signed Location state
 * that an older Location no longer matches, no referrers API) and can be made to misbehave.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import { parseOciReference } from './reference.ts';
import { openRegistry, referrersTag } from './registry.ts';
import type { BlobSource, RegistryOptions } from './types.ts';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Seen {
  method: string;
  url: string;
  authorization?: string;
  bytes: number;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => boolean | void;

interface FakeRegistry {
  host: string;
  blobs: Map<string, Buffer>;
  manifests: Map<string, { type: string; bytes: Buffer }>;
  seen: Seen[];
  connections(): number;
  /** runs first; true when it answered */
  before?: Handler;
  /** what a PATCH stores, given its number (1-based) and body: distribution appends it whole */
  patchStores?: (n: number, body: Buffer) => Buffer;
  close(): Promise<void>;
}

interface Listening {
  host: string;
  /** connections accepted so far */
  connections(): number;
  close(): Promise<void>;
}

async function listen(handler: Handler): Promise<Listening> {
  let connections = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks)));
    req.on('error', () => undefined);
  });
  server.on('connection', () => (connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function errorBody(res: ServerResponse, status: number, code: string): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ errors: [{ code, message: code.toLowerCase().replace(/_/g, ' ') }] }));
}

async function fakeRegistry(): Promise<FakeRegistry> {
  const uploads = new Map<string, { data: Buffer; state: number }>();
  let patches = 0;
  let nextId = 0;
  const fake: FakeRegistry = {
    host: '',
    blobs: new Map(),
    manifests: new Map(),
    seen: [],
    connections: () => 0,
    close: async () => undefined,
  };
  const uploadLocation = (repo: string, id: string) =>
    `/v2/${repo}/blobs/uploads/${id}?_state=${uploads.get(id)!.state}`;
  const answerUpload = (res: ServerResponse, status: number, repo: string, id: string) => {
    const size = uploads.get(id)!.data.length;
    res.writeHead(status, {
      location: uploadLocation(repo, id),
      range: `0-${Math.max(0, size - 1)}`,
      'content-length': '0',
    });
    res.end();
  };
  const server = await listen((req, res, body) => {
    const url = new URL(req.url!, 'http://x');
    fake.seen.push({
      method: req.method!,
      url: req.url!,
      authorization: req.headers.authorization,
      bytes: body.length,
    });
    if (fake.before?.(req, res, body)) return;
    let m = /^\/v2\/(.+)\/blobs\/uploads\/(.*)$/.exec(url.pathname);
    if (m) {
      const [, repo, id] = m as unknown as [string, string, string];
      if (req.method === 'POST') {
        const from = url.searchParams.get('from');
        const mount = url.searchParams.get('mount');
        if (mount && from && fake.blobs.has(mount)) {
          res.writeHead(201, { location: `/v2/${repo}/blobs/${mount}` }).end();
          return;
        }
        const newId = `u${++nextId}`;
        uploads.set(newId, { data: Buffer.alloc(0), state: 0 });
        answerUpload(res, 202, repo, newId);
        return;
      }
      const upload = uploads.get(id);
      if (!upload || url.searchParams.get('_state') !== String(upload.state)) {
        uploads.delete(id);
        errorBody(res, 404, 'BLOB_UPLOAD_INVALID');
        return;
      }
      if (req.method === 'PATCH') {
        patches += 1;
        const stored = fake.patchStores?.(patches, body) ?? body;
        upload.data = Buffer.concat([upload.data, stored]);
        upload.state += 1;
        answerUpload(res, 202, repo, id);
      } else if (req.method === 'GET') {
        answerUpload(res, 204, repo, id);
      } else if (req.method === 'PUT') {
        const digest = url.searchParams.get('digest')!;
        uploads.delete(id);
        if (sha256(upload.data) !== digest) {
          errorBody(res, 400, 'DIGEST_INVALID');
          return;
        }
        fake.blobs.set(digest, upload.data);
        res.writeHead(201, { 'docker-content-digest': digest, 'content-length': '0' }).end();
      } else {
        uploads.delete(id);
        res.writeHead(204).end();
      }
      return;
    }
    m = /^\/v2\/(.+)\/(blobs|manifests|referrers)\/([^/]+)$/.exec(url.pathname);
    if (!m) {
      res.writeHead(404).end('404 page not found');
      return;
    }
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (kind === 'blobs') {
      const blob = fake.blobs.get(ref);
      if (!blob) return errorBody(res, 404, 'BLOB_UNKNOWN');
      const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      const part = blob.subarray(start);
      res.writeHead(start > 0 ? 206 : 200, {
        'content-length': String(part.length),
        ...(start > 0
          ? { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}` }
          : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : part);
    } else if (kind === 'manifests' && req.method === 'PUT') {
      const entry = { type: req.headers['content-type']!, bytes: body };
      fake.manifests.set(`${repo}:${ref}`, entry);
      fake.manifests.set(`${repo}:${sha256(body)}`, entry);
      res.writeHead(201, { 'docker-content-digest': sha256(body) }).end();
    } else if (kind === 'manifests') {
      const entry = fake.manifests.get(`${repo}:${ref}`);
      if (!entry) return errorBody(res, 404, 'MANIFEST_UNKNOWN');
      res.writeHead(200, {
        'content-type': entry.type,
        'docker-content-digest': sha256(entry.bytes),
      });
      res.end(entry.bytes);
    } else {
      res.writeHead(404).end('404 page not found');
    }
  });
  fake.host = server.host;
  fake.connections = server.connections;
  fake.close = server.close;
  return fake;
}

function source(data: Buffer): BlobSource {
  return {
    digest: sha256(data),
    size: data.length,
    open: (offset) => Readable.from([data.subarray(offset)]),
  };
}

let fake: FakeRegistry;
let lines: string[];
let dir: string;
const open = (extra: RegistryOptions = {}) =>
  openRegistry(parseOciReference(`oci://${fake.host}/team/app`), {
    insecureHttp: true,
    log: (line) => lines.push(line),
    ...extra,
  });

beforeEach(async () => {
  fake = await fakeRegistry();
  lines = [];
  dir = await mkdtemp(join(tmpdir(), 'imgctl-registry-unit-'));
});
afterEach(async () => {
  await fake.close();
  await rm(dir, { recursive: true, force: true });
});

async function caught(promise: Promise<unknown>): Promise<ImgctlError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ImgctlError);
  return error as ImgctlError;
}

describe('retries', () => {
  it('retries a 500 and then gets the manifest, saying so in the log', async () => {
    const bytes = Buffer.from('{"schemaVersion":2}');
    fake.manifests.set('team/app:v1', {
      type: 'application/vnd.oci.image.manifest.v1+json',
      bytes,
    });
    let failures = 1;
    fake.before = (_req, res) => {
      if (failures-- <= 0) return false;
      errorBody(res, 500, 'UNKNOWN');
      return true;
    };
    const manifest = await open().getManifest('team/app', 'v1', [
      'application/vnd.oci.image.manifest.v1+json',
    ]);
    expect(manifest.bytes.equals(bytes)).toBe(true);
    expect(manifest.digest).toBe(sha256(bytes));
    expect(lines.some((l) => /retrying GET manifest team\/app:v1: 500, in 0\.5 s/.test(l))).toBe(
      true,
    );
  });

  it('gives up after a few 503s with a FAILED error naming the registry', async () => {
    fake.before = (_req, res) => {
      res.writeHead(503, { 'retry-after': '0' }).end();
      return true;
    };
    const error = await caught(open().hasBlob('team/app', sha256(Buffer.from('x'))));
    expect(error.code).toBe('FAILED');
    expect(error.message).toMatch(new RegExp(`${fake.host} answered 503`));
    expect(fake.seen).toHaveLength(4);
  });

  it('gives up a connection whose TLS handshake never comes after the connect timeout, retried', async () => {
    // a port that takes connections and never answers: the client's hello goes unanswered
    const silent = createNetServer(() => undefined);
    let accepted = 0;
    silent.on('connection', () => (accepted += 1));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const started = Date.now();
      const registry = openRegistry(parseOciReference(`oci://${host}/team/app`), {
        connectTimeoutMs: 100,
        log: (line) => lines.push(line),
      });
      const error = await caught(registry.hasBlob('team/app', sha256(Buffer.from('x'))));
      expect(error.code).toBe('FAILED');
      expect(error.message).toMatch(/cannot reach https:\/\/127\.0\.0\.1:\d+ \(ETIMEDOUT\)/);
      expect(accepted).toBe(4);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      silent.close();
    }
  });
});

describe('redirects', () => {
  it('refuses a manifest redirected to another host, saying where it pointed', async () => {
    const other = await listen((_req, res) => void res.writeHead(200).end('{}'));
    try {
      fake.before = (req, res) => {
        if (!req.url!.includes('/manifests/')) return false;
        res
          .writeHead(307, { location: `http://${other.host.replace('127.0.0.1', 'localhost')}/m` })
          .end();
        return true;
      };
      const error = await caught(open().getManifest('team/app', 'v1', ['application/json']));
      expect(error.code).toBe('FAILED');
      expect(error.message).toMatch(
        /pointed to http:\/\/localhost:\d+\/m; imgctl follows the registry only within/,
      );
    } finally {
      await other.close();
    }
  });

  it('follows a blob GET to its storage on another host, without the Authorization header', async () => {
    const data = randomBytes(3000);
    const storage: Seen[] = [];
    const other = await listen((req, res) => {
      storage.push({
        method: req.method!,
        url: req.url!,
        authorization: req.headers.authorization,
        bytes: 0,
      });
      res.writeHead(200, { 'content-length': String(data.length) }).end(data);
    });
    const authFile = join(dir, 'auth.json');
    await writeFile(
      authFile,
      JSON.stringify({ auths: { [fake.host]: { auth: Buffer.from('u:p').toString('base64') } } }),
    );
    try {
      fake.before = (req, res) => {
        if (!req.headers.authorization) {
          res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"' }).end();
          return true;
        }
        if (req.method !== 'GET' || !req.url!.includes('/blobs/sha256:')) return false;
        res
          .writeHead(307, {
            location: `http://${other.host.replace('127.0.0.1', 'localhost')}/s/blob?sig=1`,
          })
          .end();
        return true;
      };
      const dest = join(dir, 'blob');
      const pulled = await open({ authFile }).pullBlob('team/app', sha256(data), data.length, dest);
      expect(pulled).toEqual({ size: data.length, resumedBytes: 0 });
      expect((await readFile(dest)).equals(data)).toBe(true);
      expect(storage).toHaveLength(1);
      expect(storage[0]!.authorization).toBeUndefined();
      expect(fake.seen.at(-1)!.authorization).toMatch(/^Basic /);
    } finally {
      await other.close();
    }
  });
});

describe('chunked uploads', () => {
  it('uploads in chunks with Content-Range and finishes with an empty PUT ?digest=', async () => {
    const data = randomBytes(10_000);
    const progress: number[] = [];
    const pushed = await open({
      chunkSize: 4096,
      onProgress: (done) => progress.push(done),
    }).pushBlob('team/app', source(data));
    expect(pushed).toEqual({ digest: sha256(data), how: 'uploaded', sentBytes: 10_000 });
    expect(fake.blobs.get(sha256(data))!.equals(data)).toBe(true);
    expect(fake.seen.filter((s) => s.method === 'PATCH').map((s) => s.bytes)).toEqual([
      4096, 4096, 1808,
    ]);
    const put = fake.seen.find((s) => s.method === 'PUT')!;
    expect(put.bytes).toBe(0);
    expect(put.url).toMatch(/_state=3&digest=sha256%3A/);
    expect(progress.at(-1)).toBe(10_000);
  });

  it('fails, without retrying, when the source ends before its size (a chunk is read as it is sent)', async () => {
    const data = randomBytes(10_000);
    const short = { ...source(data), size: 10_100 };
    const error = await open({ chunkSize: 4096 })
      .pushBlob('team/app', short)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImgctlError);
    expect((error as ImgctlError).code).toBe('FAILED');
    expect((error as Error).message).toMatch(/ended at byte 10000 of 10100/);
    // no status GET: a short source is not a broken connection
    expect(fake.seen.filter((s) => s.method === 'GET')).toHaveLength(0);
    expect(fake.blobs.has(short.digest)).toBe(false);
  });

  it('fails, without retrying, when the source cannot be read (a local failure, not the registry)', async () => {
    const data = randomBytes(10_000);
    const failing: BlobSource = {
      ...source(data),
      open: () =>
        Readable.from(
          (async function* () {
            yield data.subarray(0, 1000);
            throw Object.assign(new Error('i/o error'), { code: 'EIO' });
          })(),
        ),
    };
    const error = await caught(open({ chunkSize: 4096 }).pushBlob('team/app', failing));
    expect(error.code).toBe('FAILED');
    expect(error.message).toMatch(/reading the source of sha256:\w+ at byte 1000: EIO/);
    expect(fake.seen.filter((s) => s.method === 'GET')).toHaveLength(0);
  });

  it('sends every request of an upload over the connections it has (bodies read to their end)', async () => {
    // Empty answers left unread kept their sockets from the pool: the 17th request of an upload
    // waited two minutes for the agent's 16 sockets to time out.
    const data = randomBytes(40 * 1024);
    const pushed = await open({ chunkSize: 1024 }).pushBlob('team/app', source(data));
    expect(pushed.how).toBe('uploaded');
    expect(fake.seen.length).toBeGreaterThan(40);
    expect(fake.connections()).toBeLessThanOrEqual(4);
  });

  it('goes on from where the registry says it is when it stored less of a chunk than was sent', async () => {
    const data = randomBytes(10_000);
    fake.patchStores = (n, body) => (n === 2 ? body.subarray(0, 1000) : body);
    const pushed = await open({ chunkSize: 4096 }).pushBlob('team/app', source(data));
    expect(pushed.how).toBe('uploaded');
    expect(fake.blobs.get(sha256(data))!.equals(data)).toBe(true);
    expect(
      lines.some((l) =>
        /the registry holds 5096 bytes after bytes 4096-8191; going on from 5096/.test(l),
      ),
    ).toBe(true);
  });

  it('starts the blob again when the registry holds more than was sent (a chunk stored twice)', async () => {
    const data = randomBytes(10_000);
    fake.patchStores = (n, body) => (n === 2 ? Buffer.concat([body, body]) : body);
    const pushed = await open({ chunkSize: 4096 }).pushBlob('team/app', source(data));
    expect(pushed.how).toBe('uploaded');
    expect(pushed.sentBytes).toBe(8192 + 10_000);
    expect(fake.blobs.get(sha256(data))!.equals(data)).toBe(true);
    expect(
      lines.some((l) => /again from the start: .*holds 12288 bytes, more than were sent/.test(l)),
    ).toBe(true);
    expect(fake.seen.filter((s) => s.method === 'POST')).toHaveLength(2);
  });

  it('stops at once on Ctrl-C (windDown) while it waits to retry a PATCH, at the offset the registry gives', async () => {
    const data = randomBytes(10_000);
    const windDown = new AbortController();
    let n = 0;
    fake.before = (req, res) => {
      if (req.method !== 'PATCH' || ++n !== 2) return false;
      res.writeHead(503, { 'retry-after': '30' }).end();
      setTimeout(() => windDown.abort(), 50);
      return true;
    };
    const started = Date.now();
    await expect(
      open({ chunkSize: 4096, windDown: windDown.signal }).pushBlob('team/app', source(data)),
    ).rejects.toThrow(/interrupted: 4096 of 10000 bytes/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('after a 416 or a broken PATCH, asks for the upload status and resumes from its Range', async () => {
    const data = randomBytes(10_000);
    let n = 0;
    fake.before = (req, res) => {
      if (req.method !== 'PATCH') return false;
      n += 1;
      if (n === 2) {
        res.writeHead(416, { range: '0-4095' }).end();
        return true;
      }
      if (n === 3) {
        req.socket.destroy();
        return true;
      }
      return false;
    };
    const pushed = await open({ chunkSize: 4096 }).pushBlob('team/app', source(data));
    expect(pushed.how).toBe('uploaded');
    expect(fake.blobs.get(sha256(data))!.equals(data)).toBe(true);
    expect(lines.filter((l) => /asking the registry where the upload stands/.test(l))).toHaveLength(
      2,
    );
    expect(fake.seen.filter((s) => s.method === 'GET' && s.url.includes('/uploads/'))).toHaveLength(
      2,
    );
  });

  it('fetches a new bearer token between chunks when the registry answers 401 (a token expired mid-upload)', async () => {
    const data = randomBytes(10_000);
    let issued = 0;
    let valid = '';
    const tokens = await listen((_req, res) => {
      valid = `t${++issued}`;
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ token: valid }));
    });
    let patches = 0;
    fake.before = (req, res) => {
      if (req.headers.authorization === `Bearer ${valid}`) {
        // the token runs out after the first chunk
        if (req.method === 'PATCH' && ++patches === 1) valid = 'expired';
        return false;
      }
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="fake",scope="repository:team/app:pull,push"`,
      });
      res.end();
      return true;
    };
    try {
      const pushed = await open({ chunkSize: 4096 }).pushBlob('team/app', source(data));
      expect(pushed).toEqual({ digest: sha256(data), how: 'uploaded', sentBytes: 10_000 });
      expect(fake.blobs.get(sha256(data))!.equals(data)).toBe(true);
      const patchAuth = fake.seen.filter((s) => s.method === 'PATCH').map((s) => s.authorization);
      // t1 was for HEAD (pull), t2 for the upload (pull,push) until it ran out
      expect(patchAuth).toEqual(['Bearer t2', 'Bearer t2', 'Bearer t3', 'Bearer t3']);
    } finally {
      await tokens.close();
    }
  });

  it('resumes an upload another Registry left, from the Location kept in uploadStateDir', async () => {
    const data = randomBytes(20_000);
    const uploadStateDir = join(dir, 'uploads');
    const controller = new AbortController();
    const first = open({
      chunkSize: 4096,
      uploadStateDir,
      signal: controller.signal,
      onProgress: (done) => done >= 8192 && controller.abort(new Error('stopped')),
    });
    await expect(first.pushBlob('team/app', source(data))).rejects.toThrow('stopped');
    const second = await open({ chunkSize: 4096, uploadStateDir }).pushBlob(
      'team/app',
      source(data),
    );
    expect(second).toEqual({ digest: sha256(data), how: 'uploaded', sentBytes: 20_000 - 8192 });
    expect(lines.some((l) => /resuming the upload of sha256:\w+ at byte 8192/.test(l))).toBe(true);
    expect(fake.blobs.get(sha256(data))!.equals(data)).toBe(true);
  });

  it('skips a blob the registry has and mounts one another repository has', async () => {
    const data = randomBytes(100);
    fake.blobs.set(sha256(data), data);
    const registry = open();
    expect(await registry.pushBlob('team/app', source(data))).toEqual({
      digest: sha256(data),
      how: 'present',
      sentBytes: 0,
    });
    fake.before = (req, res) => {
      if (req.method !== 'HEAD') return false;
      res.writeHead(404).end();
      return true;
    };
    const mounted = await registry.pushBlob('team/other', source(data), {
      mountFrom: ['team/app'],
    });
    expect(mounted.how).toBe('mounted');
    expect(fake.seen.at(-1)!.url).toBe(
      `/v2/team/other/blobs/uploads/?mount=${encodeURIComponent(sha256(data))}&from=team%2Fapp`,
    );
  });
});

describe('manifests', () => {
  it('refuses a manifest over 4 MiB before sending it, and one served over 4 MiB', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
    const error = await caught(
      open().putManifest('team/app', 'v1', { mediaType: 'application/json', bytes: big }),
    );
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toMatch(/4194305 bytes, over the 4194304/);
    expect(fake.seen).toHaveLength(0);
    fake.manifests.set('team/app:big', { type: 'application/json', bytes: big });
    expect((await caught(open().getManifest('team/app', 'big', ['application/json']))).code).toBe(
      'VALIDATION',
    );
  });

  it('checks a manifest fetched by digest and the Docker-Content-Digest the registry sends', async () => {
    const bytes = Buffer.from('{"a":1}');
    const wrong = sha256(Buffer.from('other'));
    fake.manifests.set(`team/app:${wrong}`, { type: 'application/json', bytes });
    const error = await caught(open().getManifest('team/app', wrong, ['application/json']));
    expect(error.code).toBe('INTEGRITY');
    fake.before = (req, res) => {
      if (req.method !== 'GET') return false;
      res.writeHead(200, { 'docker-content-digest': wrong }).end(bytes);
      return true;
    };
    expect(
      (await caught(open().getManifest('team/app', 'v1', ['application/json']))).message,
    ).toMatch(/says its digest is sha256:\w+, its bytes hash to/);
  });

  it('keeps the referrers of a manifest in the sha256-<hex> tag when the registry has no referrers API', async () => {
    const subject = sha256(Buffer.from('the image'));
    const referrer = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        artifactType: 'application/vnd.imgctl.signature.v1',
        config: {
          mediaType: 'application/vnd.oci.empty.v1+json',
          digest: sha256(Buffer.from('{}')),
          size: 2,
        },
        layers: [],
        subject: {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: subject,
          size: 10,
        },
      }),
    );
    const registry = open();
    const digest = await registry.putManifest('team/app', sha256(referrer), {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      bytes: referrer,
    });
    expect(fake.manifests.has(`team/app:${referrersTag(subject)}`)).toBe(true);
    const found = await registry.referrers(
      'team/app',
      subject,
      'application/vnd.imgctl.signature.v1',
    );
    expect(found).toEqual([
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        artifactType: 'application/vnd.imgctl.signature.v1',
        digest,
        size: referrer.length,
      },
    ]);
    expect(await registry.referrers('team/app', subject, 'application/other')).toEqual([]);
    expect(await registry.referrers('team/app', sha256(Buffer.from('nothing')))).toEqual([]);
  });
});

describe('pullBlob', () => {
  it('resumes a partial file with Range and says how many bytes it had', async () => {
    const data = randomBytes(50_000);
    fake.blobs.set(sha256(data), data);
    const dest = join(dir, 'blob');
    await writeFile(`${dest}.partial`, data.subarray(0, 20_000));
    const pulled = await open().pullBlob('team/app', sha256(data), undefined, dest);
    expect(pulled).toEqual({ size: 50_000, resumedBytes: 20_000 });
    expect((await readFile(dest)).equals(data)).toBe(true);
    expect(fake.seen.at(-1)!.method).toBe('GET');
  });

  it('removes the download and throws INTEGRITY when the bytes do not match the digest', async () => {
    const data = randomBytes(5000);
    const claimed = sha256(Buffer.from('something else'));
    fake.blobs.set(claimed, data);
    const dest = join(dir, 'blob');
    const error = await caught(open().pullBlob('team/app', claimed, undefined, dest));
    expect(error.code).toBe('INTEGRITY');
    await expect(stat(`${dest}.partial`)).rejects.toThrow(/ENOENT/);
    await expect(stat(dest)).rejects.toThrow(/ENOENT/);
  });
});
