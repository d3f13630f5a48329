import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type BlobDownloader, openBlobCache } from './blob-cache.ts';

const HEX_A = 'a'.repeat(64);
const HEX_B = 'b'.repeat(64);
const HEX_C = 'c'.repeat(64);

/** A downloader that writes `size` bytes after a tick, counting its calls. */
function fakeDownloader(size = 1024): BlobDownloader & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async downloadBlob(hex, dest) {
      calls.push(hex);
      await new Promise((r) => setTimeout(r, 20));
      await writeFile(dest, Buffer.alloc(size));
      return { path: dest, size, sha256: hex, resumedBytes: 0, requests: 1 };
    },
  };
}

describe('blob cache', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'blob-cache-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('downloads a blob once; later uses find it in the cache', async () => {
    const cache = openBlobCache(dir);
    const dl = fakeDownloader();
    const first = await cache.ensure(HEX_A, dl);
    expect(first).toMatchObject({ downloaded: true, size: 1024 });
    expect(first.path).toBe(join(dir, 'sha256', 'aa', HEX_A));
    const second = await cache.ensure(HEX_A, dl);
    expect(second.downloaded).toBe(false);
    expect(dl.calls).toEqual([HEX_A]);
  });

  it('two agents pulling the same blob at once download it once', async () => {
    const dl = fakeDownloader();
    const results = await Promise.all([
      openBlobCache(dir).ensure(HEX_A, dl),
      openBlobCache(dir).ensure(HEX_A, dl),
    ]);
    expect(dl.calls).toEqual([HEX_A]);
    expect(results.map((r) => r.downloaded).sort()).toEqual([false, true]);
    expect(await readdir(join(dir, 'locks'))).toEqual([]);
  });

  it('takes over a lock left by a dead process', async () => {
    const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid!;
    await mkdir(join(dir, 'locks'), { recursive: true });
    await writeFile(join(dir, 'locks', `${HEX_A}.lock`), `${dead}\n`);
    const dl = fakeDownloader();
    const result = await openBlobCache(dir).ensure(HEX_A, dl);
    expect(result.downloaded).toBe(true);
  });

  it('rejects a name that is not a sha256', async () => {
    expect(() => openBlobCache(dir).path('../etc/passwd')).toThrow(/invalid sha256/);
  });

  it('evicts unreferenced blobs, least recently used first, down to the limit', async () => {
    const cache = openBlobCache(dir);
    const dl = fakeDownloader(1000);
    for (const hex of [HEX_A, HEX_B, HEX_C]) await cache.ensure(hex, dl);
    // A used long ago, B recently, C referenced by an existing disk.
    await utimes(cache.path(HEX_A), new Date(1000), new Date(1000));
    await utimes(cache.path(HEX_B), new Date(2000), new Date(2000));
    await utimes(cache.path(HEX_C), new Date(500), new Date(500));
    const disk = join(dir, 'vm-root.qcow2');
    await writeFile(disk, '');
    await cache.addRef(HEX_C, disk);

    expect(await cache.evict(2000)).toEqual([HEX_A]);
    expect(await cache.has(HEX_A)).toBe(false);
    expect(await cache.evict(0)).toEqual([HEX_B]);
    expect(await cache.has(HEX_C)).toBe(true);

    // Once the disk is gone (and its reference is old), the blob may go too.
    await rm(disk);
    const refFile = join(dir, 'refs', HEX_C, (await readdir(join(dir, 'refs', HEX_C)))[0]!);
    await utimes(refFile, new Date(0), new Date(0));
    expect(await cache.evict(0)).toEqual([HEX_C]);
    expect(await readdir(dirname(cache.path(HEX_C)))).toEqual([]);
  });

  it('never evicts the blobs a run is using', async () => {
    const cache = openBlobCache(dir);
    await cache.ensure(HEX_A, fakeDownloader());
    expect(await cache.evict(0, [HEX_A])).toEqual([]);
    expect(await cache.has(HEX_A)).toBe(true);
  });
});
