import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  edit,
  GOOD_STORE,
  IMAGE,
  makeStore,
  SHA,
} from '../../../../test/helpers/validate-documents.ts';
import { createRelease, releasePaths, setChannel } from '../store/releases.ts';
import { storePaths } from '../store/store.ts';
import { verifyStore } from './verify.ts';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const [ROOT, DATA, NEXT, ORPHAN] = ['root 1', 'data', 'root 2', 'orphan'].map(sha256) as [
  string,
  string,
  string,
  string,
];

async function writeBlob(store: string, content: string): Promise<void> {
  const file = storePaths.blobFile(store, sha256(content));
  await mkdir(join(file, '..'), { recursive: true });
  await writeFile(file, content);
}

/** The good store with real blobs for both disks of web, released as web@1 (channel stable). */
async function releasedStore(): Promise<string> {
  const image = edit(
    IMAGE.replace(SHA, ROOT),
    '    size: 1GiB',
    `    size: 1GiB\n    sha256: ${DATA}\n    blob: true`,
  );
  const store = await makeStore({ ...GOOD_STORE, 'images/web/image.yaml': image });
  for (const content of ['root 1', 'data', 'root 2', 'orphan']) await writeBlob(store, content);
  await createRelease(store, 'web', { channels: ['stable'] });
  return store;
}

/** web moves on to revision 2 with another system disk (NEXT): only web@1 names ROOT now. */
async function moveOn(store: string): Promise<void> {
  const file = storePaths.imageFile(store, 'web');
  const text = await readFile(file, 'utf8');
  await writeFile(file, text.replace(ROOT, NEXT).replace('revision: 1', 'revision: 2'));
}

describe('verifyStore and releases', () => {
  it('passes a sound store and counts its releases', async () => {
    const store = await releasedStore();
    const result = await verifyStore(store);
    expect(result.problems).toEqual([]);
    expect(result.releases).toEqual({ checked: 1, changed: [], missing: [] });
    expect(result.counts.releases).toBe(1);
  });

  it('finds a release file changed, added or removed behind imgctl', async () => {
    const store = await releasedStore();
    const dir = releasePaths.releaseDir(store, 'web', 1);
    await writeFile(join(dir, 'images/web/records/large.yaml'), 'tampered\n');
    await writeFile(join(dir, 'images/web/records/extra.yaml'), 'added\n');
    await rm(join(dir, 'images/web/custom_scripts/base/10-hello.sh'));
    expect((await verifyStore(store)).releases.changed).toEqual([
      { release: 'web@1', file: 'images/web/custom_scripts/base/10-hello.sh' },
      { release: 'web@1', file: 'images/web/records/extra.yaml' },
      { release: 'web@1', file: 'images/web/records/large.yaml' },
    ]);
  });

  it('finds a missing release blob, a release.yaml out of place and a channel to nowhere', async () => {
    const store = await releasedStore();
    await moveOn(store);
    await createRelease(store, 'web');
    await rm(storePaths.blobFile(store, ROOT));
    const result = await verifyStore(store);
    expect(result.missing).toEqual([]); // the working image no longer names ROOT
    expect(result.releases.missing).toEqual([{ release: 'web@1', disk: 'system', sha256: ROOT }]);

    const second = releasePaths.releaseFile(store, 'web', 2);
    await writeFile(second, (await readFile(second, 'utf8')).replace('revision: 2', 'revision: 1'));
    await setChannel(store, 'web', 'beta', 1);
    const channels = releasePaths.channelsFile(store, 'web');
    await writeFile(channels, (await readFile(channels, 'utf8')).replace('beta: 1', 'beta: 7'));
    const problems = (await verifyStore(store)).problems.map(
      (p) => `${p.file} ${p.path}: ${p.message}`,
    );
    expect(problems).toEqual([
      'releases/web/2/release.yaml : says it is web@1, but lies in web@2/',
      'releases/web/channels.yaml channels.beta: points at web@7, which is not a valid release',
    ]);
  });

  it('gc keeps the blobs only a release names, even when its release.yaml does not parse', async () => {
    const store = await releasedStore();
    await moveOn(store);
    const gc = await verifyStore(store, { gc: true });
    expect(gc.removed).toEqual([`.blobs/sha256/${ORPHAN.slice(0, 2)}/${ORPHAN}`]);
    expect(gc.blobs).toEqual({ checked: 3, bad: [] });

    // a broken release.yaml (its frozen image.yaml too) still keeps its disks
    const dir = releasePaths.releaseDir(store, 'web', 1);
    for (const file of ['release.yaml', 'images/web/image.yaml'])
      await writeFile(join(dir, file), `${await readFile(join(dir, file), 'utf8')}\n: [unclosed\n`);
    const again = await verifyStore(store, { gc: true });
    expect(again.removed).toEqual([]);
    expect(again.problems.map((p) => p.file)).toContain('releases/web/1/release.yaml');
  });
});
