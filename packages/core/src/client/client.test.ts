import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createClient } from './client.ts';
import { parseRange } from '../server/files.ts';
import {
  formatSignatureHeader,
  generateSigningKey,
  parsePrivateKey,
  signPlan,
} from '../plan/signing.ts';
import type { PlanDoc } from '../store/types.ts';

// A stand-in for imgctl serve whose misbehaviour each test scripts; e2e tests use the real one.
type Behaviour = (req: IncomingMessage, res: ServerResponse, n: number) => void;

let server: Server | undefined;
let dir: string | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function serve(behaviour: Behaviour): Promise<{ url: string; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  server = createServer((req, res) => {
    requests.push(req);
    behaviour(req, res, requests.length);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const blob = randomBytes(3 * 1024 * 1024 + 17);
const hex = createHash('sha256').update(blob).digest('hex');

/** Sends the blob honouring Range; `cut` ends the body early (destroying the socket) after N bytes. */
function sendBlob(req: IncomingMessage, res: ServerResponse, cut?: number, content = blob): void {
  const range = parseRange(req.headers.range, content.length);
  const start = range && range !== 'unsatisfiable' ? range.start : 0;
  const body = content.subarray(start);
  res.writeHead(range ? 206 : 200, {
    'content-length': body.length,
    ...(range ? { 'content-range': `bytes ${start}-${content.length - 1}/${content.length}` } : {}),
  });
  if (cut === undefined) res.end(body);
  else res.write(body.subarray(0, cut), () => res.destroy());
}

async function tempDir() {
  dir = await mkdtemp(join(tmpdir(), 'imgctl-client-'));
  return dir;
}

const fast = { retries: 3, retryDelayMs: 10, maxRetryDelayMs: 20 };

describe('downloadBlob', () => {
  it('resumes with Range after the connection drops, and verifies the whole blob', async () => {
    const { url, requests } = await serve((req, res, n) =>
      sendBlob(req, res, n === 1 ? 1024 * 1024 : undefined),
    );
    const dest = join(await tempDir(), 'blob');
    const result = await createClient({ baseUrl: url, ...fast }).downloadBlob(hex, dest);
    expect((await readFile(dest)).equals(blob)).toBe(true);
    expect(requests[1]!.headers.range).toMatch(/^bytes=\d+-$/);
    expect(result.resumedBytes).toBeGreaterThan(0);
    expect(existsSync(`${dest}.partial`)).toBe(false);
  });

  it('downloads a blob that a proxy re-chunked, resuming it after a cut', async () => {
    // No Content-Length: node:http sends the body chunked.
    const { url, requests } = await serve((req, res, n) => {
      const range = parseRange(req.headers.range, blob.length);
      const start = range && range !== 'unsatisfiable' ? range.start : 0;
      res.writeHead(range ? 206 : 200, {
        ...(range ? { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}` } : {}),
      });
      if (n === 1) res.write(blob.subarray(0, 1024 * 1024), () => res.destroy());
      else res.end(blob.subarray(start));
    });
    const dest = join(await tempDir(), 'blob');
    await createClient({ baseUrl: url, ...fast }).downloadBlob(hex, dest);
    expect((await readFile(dest)).equals(blob)).toBe(true);
    expect(requests[1]!.headers.range).toMatch(/^bytes=\d+-$/);
  });

  it('rehashes a partial file left by an earlier run and asks only for the rest', async () => {
    const { url, requests } = await serve((req, res) => sendBlob(req, res));
    const dest = join(await tempDir(), 'blob');
    await writeFile(`${dest}.partial`, blob.subarray(0, 1000));
    const result = await createClient({ baseUrl: url }).downloadBlob(hex, dest);
    expect(requests[0]!.headers.range).toBe('bytes=1000-');
    expect(result).toMatchObject({ resumedBytes: 1000, size: blob.length, requests: 1 });
    expect((await readFile(dest)).equals(blob)).toBe(true);
  });

  it('aborts a stalled transfer and resumes it', async () => {
    const { url, requests } = await serve((req, res, n) => {
      if (n === 1)
        res.writeHead(200, { 'content-length': blob.length }).write(blob.subarray(0, 5000));
      else sendBlob(req, res);
    });
    const dest = join(await tempDir(), 'blob');
    await createClient({ baseUrl: url, ...fast }).downloadBlob(hex, dest, { stallTimeoutMs: 200 });
    expect(requests).toHaveLength(2);
    expect((await readFile(dest)).equals(blob)).toBe(true);
  });

  it('retries a 5xx, and gives up with FAILED after the retries, keeping the partial file', async () => {
    const { url, requests } = await serve((_req, res) => res.writeHead(503).end());
    const dest = join(await tempDir(), 'blob');
    await expect(
      createClient({ baseUrl: url, ...fast }).downloadBlob(hex, dest),
    ).rejects.toMatchObject({
      code: 'FAILED',
    });
    expect(requests).toHaveLength(4);
  });

  it('deletes the partial file and fails with INTEGRITY when the content does not match', async () => {
    const other = Buffer.from(blob);
    other[12345] = other[12345]! ^ 1;
    const { url } = await serve((req, res) => sendBlob(req, res, undefined, other));
    const dest = join(await tempDir(), 'blob');
    await expect(createClient({ baseUrl: url }).downloadBlob(hex, dest)).rejects.toMatchObject({
      code: 'INTEGRITY',
    });
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(`${dest}.partial`)).toBe(false);
  });

  it('reports progress up to the size of the blob', async () => {
    const { url } = await serve((req, res) => sendBlob(req, res));
    const seen: number[] = [];
    await createClient({ baseUrl: url }).downloadBlob(hex, join(await tempDir(), 'b'), {
      onProgress: (p) => {
        expect(p.total).toBe(blob.length);
        seen.push(p.bytes);
      },
    });
    expect(seen.at(-1)).toBe(blob.length);
  });
});

/** A sink into memory that checks the contract: each offset is where the last write ended or 0. */
function memorySink(delayMs = 0) {
  const content = Buffer.alloc(blob.length);
  const offsets: number[] = [];
  let end = 0;
  return {
    content,
    offsets,
    async write(data: Buffer, offset: number) {
      expect(offset === end || offset === 0 || offset < end).toBe(true);
      offsets.push(offset);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      data.copy(content, offset);
      end = offset + data.length;
    },
  };
}

describe('streamBlob', () => {
  it('writes the blob in order through a slow sink and verifies it', async () => {
    const { url } = await serve((req, res) => sendBlob(req, res));
    const sink = memorySink(20);
    const result = await createClient({ baseUrl: url }).streamBlob(hex, sink);
    expect(result).toEqual({ size: blob.length, sha256: hex, requests: 1 });
    expect(sink.content.equals(blob)).toBe(true);
    expect(sink.offsets).toEqual([...sink.offsets].sort((a, b) => a - b));
  });

  it('resumes after a cut where the last write ended', async () => {
    const { url, requests } = await serve((req, res, n) =>
      sendBlob(req, res, n === 1 ? 2 * 1024 * 1024 + 5 : undefined),
    );
    const sink = memorySink();
    await createClient({ baseUrl: url, ...fast }).streamBlob(hex, sink);
    expect(requests[1]!.headers.range).toBe(`bytes=${sink.offsets[1]}-`);
    expect(sink.content.equals(blob)).toBe(true);
  });

  it('starts over from 0 when the server answers a resume with the whole blob', async () => {
    const { url, requests } = await serve((req, res, n) => {
      if (n === 1) sendBlob(req, res, 1024 * 1024);
      else res.writeHead(200, { 'content-length': blob.length }).end(blob);
    });
    const sink = memorySink();
    await createClient({ baseUrl: url, ...fast }).streamBlob(hex, sink);
    expect(requests.length).toBe(3);
    expect(sink.offsets.at(-2)).toBe(0);
    expect(sink.content.equals(blob)).toBe(true);
  });

  it('fails with INTEGRITY when what was written does not match', async () => {
    const other = Buffer.from(blob);
    other[blob.length - 1] = other[blob.length - 1]! ^ 1;
    const { url } = await serve((req, res) => sendBlob(req, res, undefined, other));
    await expect(
      createClient({ baseUrl: url }).streamBlob(hex, memorySink()),
    ).rejects.toMatchObject({ code: 'INTEGRITY' });
  });

  it("passes on the server's JSON error without retrying it", async () => {
    const { url, requests } = await serve((_req, res) =>
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end('{"error":{"code":"NOT_FOUND","message":"no blob sha256:ab"}}'),
    );
    await expect(
      createClient({ baseUrl: url, ...fast }).streamBlob(hex, memorySink()),
    ).rejects.toMatchObject({ code: 'NOT_FOUND', message: /no blob sha256:ab/ });
    expect(requests).toHaveLength(1);
  });

  it('passes on a failed write without retrying it', async () => {
    const { url, requests } = await serve((req, res) => sendBlob(req, res));
    const full = {
      write: () => Promise.reject(Object.assign(new Error('no space'), { code: 'ENOSPC' })),
    };
    await expect(
      createClient({ baseUrl: url, ...fast }).streamBlob(hex, full),
    ).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(requests).toHaveLength(1);
  });
});

describe('JSON calls', () => {
  const plan = {
    apiVersion: 'imgctl/v1',
    kind: 'Plan',
    image: { name: 'web', revision: 1 },
    disks: [],
  } as unknown as PlanDoc;
  const key = generateSigningKey();

  it('checks the plan signature against the trusted key', async () => {
    const signature = signPlan(plan, parsePrivateKey(key.privateKeyPem, 'k'), {
      now: new Date(),
      ttlSeconds: 60,
    });
    const { url } = await serve((_req, res) =>
      res
        .writeHead(200, {
          'content-type': 'application/json',
          'imgctl-signature': formatSignatureHeader(signature),
        })
        .end(JSON.stringify(plan)),
    );
    const got = await createClient({ baseUrl: url, trustKey: key.publicKeyPem }).getPlan({
      image: 'web',
    });
    expect(got.signature?.key_id).toBe(key.keyId);
    const other = generateSigningKey();
    await expect(
      createClient({ baseUrl: url, trustKey: other.publicKeyPem }).getPlan({ image: 'web' }),
    ).rejects.toMatchObject({
      code: 'INTEGRITY',
    });
  });

  it('refuses an unsigned plan when a key is trusted', async () => {
    const { url } = await serve((_req, res) => res.writeHead(200).end(JSON.stringify(plan)));
    await expect(
      createClient({ baseUrl: url, trustKey: key.publicKeyPem }).getPlan({ image: 'web' }),
    ).rejects.toThrow(/unsigned plan/);
  });

  it("turns the server's JSON error into an ImgctlError with its code and hint", async () => {
    const { url } = await serve((_req, res) =>
      res.writeHead(404, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          error: { code: 'NOT_FOUND', message: "image 'x' does not exist", hint: 'list them' },
        }),
      ),
    );
    await expect(createClient({ baseUrl: url }).getImage('x')).rejects.toMatchObject({
      code: 'NOT_FOUND',
      hint: 'list them',
      message: expect.stringContaining("image 'x' does not exist"),
    });
  });

  it('retries a 503 and then succeeds', async () => {
    const { url, requests } = await serve((_req, res, n) =>
      n < 3
        ? res.writeHead(503).end()
        : res.writeHead(200, { 'content-type': 'application/json' }).end('[]'),
    );
    expect(await createClient({ baseUrl: url, ...fast }).listImages()).toEqual([]);
    expect(requests).toHaveLength(3);
  });

  it('says it cannot reach a server that is not there', async () => {
    const { url } = await serve(() => undefined);
    server!.close();
    server = undefined;
    await expect(createClient({ baseUrl: url, ...fast }).listImages()).rejects.toMatchObject({
      code: 'FAILED',
      message: expect.stringMatching(/cannot reach the server.*ECONNREFUSED/),
    });
  });
});
