import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  addBlobFromFile,
  addBlobFromStream,
  blobPath,
  blobTmpDir,
  hashFile,
  listBlobs,
  removeStaleTmpFiles,
  verifyBlob,
} from './blobs.ts';
import { ImgctlError } from '../util/errors.ts';
import { parseQemuImgInfo } from './qemu-img.ts';

const MiB = 1024 * 1024;
let dir: string;
let store: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imgctl-blobs-'));
  store = join(dir, 'store');
  await mkdir(store);
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const sha = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** A file of `size` bytes that is a hole except for `data` written at `offset`. */
async function sparseFile(path: string, size: number, offset: number, data: Buffer) {
  const handle = await open(path, 'w');
  await handle.truncate(size);
  await handle.write(data, 0, data.length, offset);
  await handle.close();
  const content = Buffer.alloc(size);
  data.copy(content, offset);
  return content;
}

describe('addBlobFromFile', () => {
  it('stores the content under .blobs/sha256/ab/<hex>, named by its sha256, read-only', async () => {
    const data = randomBytes(9 * MiB + 123); // not a multiple of the chunk size
    await writeFile(join(dir, 'disk.raw'), data);
    const progress: number[] = [];
    const blob = await addBlobFromFile(store, join(dir, 'disk.raw'), {
      onProgress: (done) => progress.push(done),
    });
    expect(blob).toEqual({ sha256: sha(data), size: data.length, reused: false });
    const path = blobPath(store, blob.sha256);
    expect(path).toBe(join(store, '.blobs/sha256', blob.sha256.slice(0, 2), blob.sha256));
    expect((await readFile(path)).equals(data)).toBe(true);
    expect((await stat(path)).mode & 0o777).toBe(0o444);
    expect(progress.at(-1)).toBe(data.length);
    expect(await readdir(blobTmpDir(store))).toEqual([]);
  });

  it('keeps a sparse file sparse and hashes its holes as zeros without reading them', async () => {
    const content = await sparseFile(join(dir, 'sparse.raw'), 64 * MiB, 10 * MiB, randomBytes(MiB));
    const blob = await addBlobFromFile(store, join(dir, 'sparse.raw'));
    expect(blob.sha256).toBe(sha(content));
    const st = await stat(blobPath(store, blob.sha256));
    expect(st.size).toBe(64 * MiB);
    expect(st.blocks * 512).toBeLessThanOrEqual(2 * MiB);
    expect(await hashFile(join(dir, 'sparse.raw'))).toBe(sha(content));
  });

  it('copies a dense file exactly (all-zero blocks included)', async () => {
    const content = Buffer.alloc(16 * MiB);
    randomBytes(MiB).copy(content, 3 * MiB);
    await writeFile(join(dir, 'dense.raw'), content);
    const blob = await addBlobFromFile(store, join(dir, 'dense.raw'));
    expect(blob.sha256).toBe(sha(content));
    expect((await readFile(blobPath(store, blob.sha256))).equals(content)).toBe(true);
  });

  it('reports content it already holds as reused and rewrites a rotten copy', async () => {
    const data = randomBytes(MiB);
    await writeFile(join(dir, 'a'), data);
    const first = await addBlobFromFile(store, join(dir, 'a'));
    await rm(blobPath(store, first.sha256));
    await writeFile(blobPath(store, first.sha256), Buffer.alloc(MiB));
    expect(await verifyBlob(store, first.sha256)).toBe(false);
    const second = await addBlobFromFile(store, join(dir, 'a'));
    expect(second).toEqual({ ...first, reused: true });
    expect(await verifyBlob(store, first.sha256)).toBe(true);
  });

  it('refuses a missing file and a directory, leaving nothing behind', async () => {
    await expect(addBlobFromFile(store, join(dir, 'nope'))).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    await expect(addBlobFromFile(store, dir)).rejects.toMatchObject({ code: 'VALIDATION' });
    expect(await readdir(blobTmpDir(store))).toEqual([]);
    expect(await listBlobs(store)).toEqual([]);
  });

  it('stops when aborted and removes its temporary file', async () => {
    await writeFile(join(dir, 'a'), randomBytes(16 * MiB));
    const controller = new AbortController();
    const adding = addBlobFromFile(store, join(dir, 'a'), {
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    await expect(adding).rejects.toThrow();
    expect(await readdir(blobTmpDir(store))).toEqual([]);
    expect(await listBlobs(store)).toEqual([]);
  });
});

describe('addBlobFromStream', () => {
  const chunks = (data: Buffer, size: number) =>
    Readable.from(
      Array.from({ length: Math.ceil(data.length / size) }, (_, i) =>
        data.subarray(i * size, (i + 1) * size),
      ),
    );

  it('hashes and stores streamed content in odd-sized pieces', async () => {
    const data = randomBytes(5 * MiB + 7);
    const blob = await addBlobFromStream(store, chunks(data, 65_537), {
      expectedSha256: sha(data),
      expectedSize: data.length,
    });
    expect(blob).toEqual({ sha256: sha(data), size: data.length, reused: false });
    expect((await readFile(blobPath(store, blob.sha256))).equals(data)).toBe(true);
  });

  it('leaves all-zero blocks of streamed content as holes', async () => {
    const content = Buffer.alloc(16 * MiB);
    randomBytes(MiB).copy(content, 3 * MiB);
    const blob = await addBlobFromStream(store, chunks(content, 100_000));
    expect(blob.sha256).toBe(sha(content));
    const st = await stat(blobPath(store, blob.sha256));
    expect(st.size).toBe(16 * MiB);
    expect(st.blocks * 512).toBeLessThanOrEqual(2 * MiB);
  });

  it('refuses content that does not match the expected sha256 (INTEGRITY), keeping nothing', async () => {
    const data = randomBytes(MiB);
    const error = await addBlobFromStream(store, chunks(data, 4096), {
      expectedSha256: 'a'.repeat(64),
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImgctlError);
    expect((error as ImgctlError).code).toBe('INTEGRITY');
    expect(await listBlobs(store)).toEqual([]);
    expect(await readdir(blobTmpDir(store))).toEqual([]);
  });

  it('refuses more than maxBytes (VALIDATION), keeping nothing', async () => {
    await expect(
      addBlobFromStream(store, chunks(randomBytes(MiB), 4096), { maxBytes: MiB - 1 }),
    ).rejects.toMatchObject({ code: 'VALIDATION' });
    expect(await listBlobs(store)).toEqual([]);
    expect(await readdir(blobTmpDir(store))).toEqual([]);
  });
});

describe('store maintenance', () => {
  it('removes temporary files of writers that are gone, not of live ones', async () => {
    await mkdir(blobTmpDir(store), { recursive: true });
    // pid 2^22+1 is above Linux's pid_max limit, so it is never alive
    await writeFile(join(blobTmpDir(store), `${2 ** 22 + 1}-dead.part`), 'x');
    await writeFile(join(blobTmpDir(store), `${process.pid}-live.part`), 'x');
    expect(await removeStaleTmpFiles(store)).toEqual([`.blobs/tmp/${2 ** 22 + 1}-dead.part`]);
    expect(await readdir(blobTmpDir(store))).toEqual([`${process.pid}-live.part`]);
  });

  it('verifyBlob is false for a missing blob', async () => {
    expect(await verifyBlob(store, 'b'.repeat(64))).toBe(false);
  });
});

describe('parseQemuImgInfo', () => {
  it('reads format, sizes, backing file and flags', () => {
    const info = parseQemuImgInfo(
      JSON.stringify({
        'virtual-size': 33554432,
        filename: 'ov.qcow2',
        format: 'qcow2',
        'actual-size': 200704,
        'format-specific': { type: 'qcow2', data: { corrupt: false, 'data-file': 'x.raw' } },
        'backing-filename': '/etc/shadow',
        'dirty-flag': true,
      }),
    );
    expect(info).toEqual({
      format: 'qcow2',
      virtualSize: 33554432,
      actualSize: 200704,
      backingFile: '/etc/shadow',
      dataFile: 'x.raw',
      dirty: true,
      corrupt: false,
      vmdkCreateType: undefined,
    });
  });
});
