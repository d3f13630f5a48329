/**
 * The server killed (SIGKILL) in the middle of a blob download and started again: the client
 * keeps retrying, resumes from its partial file with Range, and the blob verifies.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { createClient } from '@imgctl/core/client/client';
import { expect, it } from 'vitest';
import { makeStore, makeTempDir, startServer, type TestServer } from './helpers/index.ts';

const SIZE = 256 * 1024 * 1024;

/** A blob of SIZE bytes written straight into the store; its sha256. */
async function writeBlob(storeDir: string): Promise<string> {
  const tmp = join(storeDir, '.blobs/tmp');
  await mkdir(join(storeDir, '.blobs'), { recursive: true });
  const hash = createHash('sha256');
  const file = await open(tmp, 'w');
  const chunk = randomBytes(4 * 1024 * 1024);
  for (let i = 0; i < SIZE / chunk.length; i++) {
    chunk.writeUInt32LE(i, 0);
    hash.update(chunk);
    await file.write(chunk);
  }
  await file.close();
  const hex = hash.digest('hex');
  await mkdir(join(storeDir, '.blobs/sha256', hex.slice(0, 2)), { recursive: true });
  await rename(tmp, join(storeDir, '.blobs/sha256', hex.slice(0, 2), hex));
  return hex;
}

it('resumes a download after the server is killed and restarted, and the blob verifies', async () => {
  const store = await makeStore();
  const hex = await writeBlob(store.dir);
  const first = await startServer({ storeDir: store.dir });
  let second: Promise<TestServer> | undefined;
  const dest = join((await makeTempDir()).dir, 'disk.img');
  const client = createClient({
    baseUrl: first.url,
    retries: 120,
    retryDelayMs: 100,
    maxRetryDelayMs: 500,
  });
  const result = await client.downloadBlob(hex, dest, {
    stallTimeoutMs: 5000,
    onProgress: ({ bytes }) => {
      if (second === undefined && bytes > SIZE / 4) {
        first.proc.kill('SIGKILL');
        second = startServer({
          storeDir: store.dir,
          args: ['--listen', `127.0.0.1:${first.port}`],
        });
      }
    },
  });
  expect(second).toBeDefined();
  const restarted = await second!;
  expect(first.proc.signalCode).toBe('SIGKILL');
  expect(result.resumedBytes).toBeGreaterThan(0);
  expect(result.requests).toBeGreaterThan(1);
  // The restarted server was asked only for the rest.
  await restarted.waitForLog(new RegExp(`GET /v1/blobs/sha256/${hex} 206 \\d+B`));
  const sent = Number(
    new RegExp(`GET /v1/blobs/sha256/${hex} 206 (\\d+)B`).exec(restarted.log())![1],
  );
  expect(sent).toBeLessThan(SIZE);
  expect(existsSync(`${dest}.partial`)).toBe(false);
  const check = createHash('sha256')
    .update(await readFile(dest))
    .digest('hex');
  expect(check).toBe(hex);
});
