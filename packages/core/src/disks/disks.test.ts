import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type AddDiskRequest, addDisk, verifyDisks } from './disks.ts';
import { createImage, initStore } from '../store/images.ts';
import { withStoreLock } from '../store/lock.ts';
import { finishStoreWrites, writeStoreFiles } from '../store/store-txn.ts';

let store: string;
beforeEach(async () => {
  store = await mkdtemp(join(tmpdir(), 'imgctl-disks-'));
  await initStore(store, { name: 'test' });
  await createImage(store, 'web');
});
afterEach(() => rm(store, { recursive: true, force: true }));

const base = { image: 'web', id: 'tmp', use: 'scratch', size: '1GiB' } as const;

describe('addDisk', () => {
  it.each<[string, Partial<AddDiskRequest>, string]>([
    ['two sources', { file: '/x' }, 'exactly one of'],
    ['no source', { size: undefined }, 'exactly one of'],
    ['content for a scratch disk', { size: undefined, file: '/x' }, 'created empty'],
    ['--size for a system disk', { use: 'system' }, 'needs content'],
    ['an unknown format', { format: 'vpc' }, "unsupported disk format 'vpc'"],
    ['a bad disk id', { id: '../x' }, 'invalid disk name'],
    ['--keep without --url', { keep: true }, '--keep only goes with --url'],
  ])('refuses %s as a usage error', async (_, change, message) => {
    const error = await addDisk(store, { ...base, ...change } as AddDiskRequest).catch((e) => e);
    expect(error).toMatchObject({ code: 'USAGE' });
    expect(error.message).toContain(message);
  });

  it('declares a scratch disk with its size, bumps the revision, and keeps the format of a declared one', async () => {
    const first = await addDisk(store, { ...base, format: 'qcow2' });
    expect(first).toMatchObject({
      disk: { id: 'tmp', use: 'scratch', format: 'qcow2', size: '1GiB' },
      revision: 2,
      changed: true,
    });
    const grown = await addDisk(store, { ...base, size: '2048MiB' });
    expect(grown).toMatchObject({ disk: { format: 'qcow2', size: '2GiB' }, revision: 3 });
    const same = await addDisk(store, { ...base, size: '2GiB' });
    expect(same).toMatchObject({ revision: 3, changed: false });
    const doc = parse(await readFile(join(store, 'images/web/image.yaml'), 'utf8'));
    expect(doc.disks.at(-1)).toEqual({ id: 'tmp', use: 'scratch', format: 'qcow2', size: '2GiB' });
    expect(await verifyDisks(store, 'web')).toContainEqual({
      id: 'tmp',
      sha256: undefined,
      ok: true,
      checked: false,
      problem: undefined,
    });
  });

  it('is NOT_FOUND for an image that does not exist', async () => {
    await expect(addDisk(store, { ...base, image: 'nope' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });
});

describe('writeStoreFiles / finishStoreWrites', () => {
  const file = (rel: string) => join(store, rel);

  it('replaces several files of the store at once', async () => {
    await writeStoreFiles(store, [
      { path: file('images/web/image.yaml'), content: 'one\n' },
      { path: file('store.yaml'), content: 'two\n' },
    ]);
    expect(await readFile(file('images/web/image.yaml'), 'utf8')).toBe('one\n');
    expect(await readFile(file('store.yaml'), 'utf8')).toBe('two\n');
    expect(await readdir(join(store, '.state/txn'))).toEqual([]);
  });

  it('refuses a path outside the store', async () => {
    await expect(
      writeStoreFiles(store, [
        { path: file('a'), content: '' },
        { path: join(store, '../elsewhere'), content: '' },
      ]),
    ).rejects.toThrow(/not a file of the store/);
  });

  it('completes a transaction killed after its journal, drops one killed before', async () => {
    // what a writer killed between its renames leaves: one file renamed, one still staged
    const committed = join(store, '.state/txn/999999-aaaa');
    await mkdir(committed, { recursive: true });
    await writeFile(join(committed, '1'), 'new store\n');
    await writeFile(
      join(committed, 'journal.json'),
      JSON.stringify({ targets: ['images/web/image.yaml', 'store.yaml'] }),
    );
    const uncommitted = join(store, '.state/txn/999999-bbbb');
    await mkdir(uncommitted, { recursive: true });
    await writeFile(join(uncommitted, '0'), 'never\n');
    const imageBefore = await readFile(file('images/web/image.yaml'), 'utf8');

    expect(await finishStoreWrites(store)).toBe(1);
    expect(await readFile(file('store.yaml'), 'utf8')).toBe('new store\n');
    expect(await readFile(file('images/web/image.yaml'), 'utf8')).toBe(imageBefore);
    expect(await readdir(join(store, '.state/txn'))).toEqual([]);
  });

  it('the next writer to take the store lock completes it before it reads anything', async () => {
    const committed = join(store, '.state/txn/999999-cccc');
    await mkdir(committed, { recursive: true });
    await writeFile(join(committed, '0'), 'committed\n');
    await writeFile(join(committed, 'journal.json'), JSON.stringify({ targets: ['store.yaml'] }));
    const seen = await withStoreLock(store, () => readFile(file('store.yaml'), 'utf8'));
    expect(seen).toBe('committed\n');
    expect(await readdir(join(store, '.state/txn'))).toEqual([]);
  });
});
