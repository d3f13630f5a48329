import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type AddDiskRequest, addDisk, verifyDisks } from './disks.ts';
import { createImage, initStore } from './images.ts';

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
