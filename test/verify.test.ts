/**
 * `imgctl disk verify` and `imgctl verify [--gc]`: rehash blobs, find missing ones, collect
 * unused ones.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeStore, makeTempDir, runCli, MiB } from './helpers/index.ts';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const blobFile = (store: string, hex: string) => join(store, '.blobs/sha256', hex.slice(0, 2), hex);

/** A store with image web whose root (system) and data disks are blobs. */
async function storeWithDisks(): Promise<{ store: string; root: string; data: string }> {
  const { dir: store } = await makeStore();
  expect((await runCli(['image', 'create', 'web', '--store', store])).exitCode).toBe(0);
  const { dir } = await makeTempDir();
  const hashes: string[] = [];
  for (const [id, use] of [
    ['root', 'system'],
    ['data', 'data'],
  ] as const) {
    const content = randomBytes(MiB);
    await writeFile(join(dir, id), content);
    const r = await runCli(['disk', 'add', 'web', join(dir, id), '--id', id, '--use', use], {
      cwd: store,
    });
    expect(r.exitCode, r.stderr).toBe(0);
    hashes.push(sha256(content));
  }
  return { store, root: hashes[0]!, data: hashes[1]! };
}

async function flipByte(file: string, position: number): Promise<void> {
  await chmod(file, 0o644);
  const handle = await open(file, 'r+');
  const byte = Buffer.alloc(1);
  await handle.read(byte, 0, 1, position);
  byte[0] = byte[0]! ^ 0xff;
  await handle.write(byte, 0, 1, position);
  await handle.close();
}

describe('imgctl disk verify', () => {
  it('passes when every blob matches, and exits 7 naming a disk with a flipped byte', async () => {
    const { store, root } = await storeWithDisks();
    const ok = await runCli(['disk', 'verify', 'web', '--json'], { cwd: store });
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(
      JSON.parse(ok.stdout).disks.map((d: { id: string; ok: boolean }) => [d.id, d.ok]),
    ).toEqual([
      ['root', true],
      ['data', true],
    ]);

    await flipByte(blobFile(store, root), 12_345);
    const bad = await runCli(['disk', 'verify', 'web'], { cwd: store });
    expect(bad.exitCode).toBe(7);
    expect(bad.stderr).toContain(`disk root: sha256 ${root}: the blob does not match its sha256`);
    expect(bad.stderr).not.toContain('disk data: sha256');
  });

  it('exits 7 for a missing blob', async () => {
    const { store, data } = await storeWithDisks();
    await rm(blobFile(store, data));
    const r = await runCli(['disk', 'verify', 'web', '--json'], { cwd: store });
    expect(r.exitCode).toBe(7);
    expect(JSON.parse(r.stdout).error.details).toEqual([
      `disk data: sha256 ${data}: the blob is missing from .blobs/`,
    ]);
  });
});

describe('imgctl verify', () => {
  it('passes on a sound store; --gc removes an orphan blob and stale temporary files only', async () => {
    const { store, root, data } = await storeWithDisks();
    const ok = await runCli(['verify'], { cwd: store });
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('ok: 2 blob(s) match their sha256');

    // an orphan (as a killed disk add leaves) and a killed writer's temporary file
    const orphan = randomBytes(1000);
    await mkdir(join(store, '.blobs/sha256', sha256(orphan).slice(0, 2)), { recursive: true });
    await writeFile(blobFile(store, sha256(orphan)), orphan);
    await writeFile(join(store, '.blobs/tmp', `${2 ** 22 + 1}-0123.part`), 'partial');

    const plain = await runCli(['verify', '--json'], { cwd: store });
    expect(plain.exitCode).toBe(0);
    expect(JSON.parse(plain.stdout)).toMatchObject({ blobs: { checked: 3, bad: [] }, removed: [] });

    const gc = await runCli(['verify', '--gc', '--json'], { cwd: store });
    expect(gc.exitCode, gc.stdout).toBe(0);
    expect(JSON.parse(gc.stdout).removed.sort()).toEqual(
      [
        `.blobs/sha256/${sha256(orphan).slice(0, 2)}/${sha256(orphan)}`,
        `.blobs/tmp/${2 ** 22 + 1}-0123.part`,
      ].sort(),
    );
    const left = (await readdir(join(store, '.blobs/sha256'), { recursive: true })).filter((p) =>
      p.includes('/'),
    );
    expect(left.sort()).toEqual(
      [`${root.slice(0, 2)}/${root}`, `${data.slice(0, 2)}/${data}`].sort(),
    );
  });

  it('--gc keeps blobs named by an image.yaml that does not even parse', async () => {
    const { store, root } = await storeWithDisks();
    await writeFile(join(store, 'images/web/image.yaml'), `broken: [\n  sha256: ${root}\n`);
    const r = await runCli(['verify', '--gc', '--json'], { cwd: store });
    expect(r.exitCode).toBe(3); // the broken file is a validation problem
    expect(await readdir(join(store, '.blobs/sha256', root.slice(0, 2)))).toEqual([root]);
  });

  it('exits 7 for a corrupted or missing blob, 3 for an invalid file', async () => {
    const { store, root, data } = await storeWithDisks();
    await flipByte(blobFile(store, root), 0);
    await rm(blobFile(store, data));
    const corrupt = await runCli(['verify'], { cwd: store });
    expect(corrupt.exitCode).toBe(7);
    expect(corrupt.stderr).toContain(
      `.blobs/sha256/${root.slice(0, 2)}/${root}: content does not match`,
    );
    expect(corrupt.stderr).toContain(`disk data: blob ${data} is missing`);

    const { store: other } = await storeWithDisks();
    await writeFile(
      join(other, 'systems/s1.yaml'),
      'apiVersion: imgctl/v1\nkind: System\nname: s1\nhostname: s1\nimage: nope\n',
    );
    const invalid = await runCli(['verify'], { cwd: other });
    expect(invalid.exitCode).toBe(3);
    expect(invalid.stderr).toContain('systems/s1.yaml');
  });
});
