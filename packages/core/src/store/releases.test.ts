import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import {
  edit,
  GOOD_STORE,
  IMAGE,
  makeStore,
  putBlob,
  SHA,
} from '../../../../test/helpers/validate-documents.ts';
import { createImage, removeImage, setImage } from './images.ts';
import {
  changedReleaseFiles,
  createRelease,
  listReleases,
  parseImageRef,
  refuseRevoked,
  releasePaths,
  revokedOnlyBlobs,
  resolveImageRef,
  setChannel,
  withdrawRelease,
} from './releases.ts';

const DATA_SHA = 'b'.repeat(64);

/** The good store, its data disk given content, both blobs present. */
async function storeWithContent(): Promise<string> {
  const image = edit(
    IMAGE,
    '    size: 1GiB',
    `    size: 1GiB\n    sha256: ${DATA_SHA}\n    blob: true`,
  );
  const dir = await makeStore({ ...GOOD_STORE, 'images/web/image.yaml': image });
  for (const sha of [SHA, DATA_SHA]) {
    await putBlob(dir, sha);
  }
  return dir;
}

const NOW = new Date('2026-12-04T08:00:00Z');

describe('image references', () => {
  it('parses NAME, NAME@REV and NAME@CHANNEL, refusing anything else', () => {
    expect(parseImageRef('web')).toEqual({ name: 'web' });
    expect(parseImageRef('web@3')).toEqual({ name: 'web', revision: 3 });
    expect(parseImageRef('web@stable')).toEqual({ name: 'web', channel: 'stable' });
    for (const bad of ['web@', 'web@0', 'web@Stable', 'web@1@2', '../x@1', 'web@-1'])
      expect(() => parseImageRef(bad), bad).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });
});

describe('releases', () => {
  it('freeze the working revision: later edits never change a release', async () => {
    const store = await storeWithContent();
    const first = await createRelease(store, 'web', { now: NOW });
    expect(first.ref).toBe('web@1');
    expect(first.release).toMatchObject({
      image: 'web',
      revision: 1,
      created_at: '2026-12-04T08:00:00.000Z',
      created_by: expect.stringMatching(/^.+@.+ \(imgctl \d+\.\d+\.\d+\)$/) as unknown,
      disks: { system: SHA, data: DATA_SHA },
    });
    const dir = releasePaths.releaseDir(store, 'web', 1);
    expect(Object.keys(first.release.files)).toEqual([
      'images/web/custom_scripts/base/10-hello.sh',
      'images/web/image.yaml',
      'images/web/records/default.yaml',
      'images/web/records/large.yaml',
    ]);
    await expect(createRelease(store, 'web')).rejects.toMatchObject({ code: 'CONFLICT' });

    const before = await readFile(join(dir, 'images/web/image.yaml'), 'utf8');
    await setImage(store, 'web', ['devices.vcpus=4']);
    expect(await readFile(join(dir, 'images/web/image.yaml'), 'utf8')).toBe(before);
    expect(await changedReleaseFiles(store, first.release)).toEqual([]);

    const second = await createRelease(store, 'web', { channels: ['stable'], now: NOW });
    expect(second).toMatchObject({ ref: 'web@2', channels: ['stable'] });
    expect(parse(await readFile(releasePaths.channelsFile(store, 'web'), 'utf8'))).toEqual({
      apiVersion: 'imgctl/v1',
      kind: 'Channels',
      image: 'web',
      channels: { stable: 2 },
    });
    expect(
      (await listReleases(store, 'web')).map((r) => [r.revision, r.state, r.channels]),
    ).toEqual([
      [1, 'active', []],
      [2, 'active', ['stable']],
    ]);

    // a file of a release changed behind imgctl's back is found
    await writeFile(join(dir, 'images/web/records/large.yaml'), 'tampered\n');
    expect(await changedReleaseFiles(store, first.release)).toEqual([
      'images/web/records/large.yaml',
    ]);
  });

  it('resolve from a reference to the working image, a release or a channel', async () => {
    const store = await storeWithContent();
    await createRelease(store, 'web', { channels: ['stable'] });
    await setImage(store, 'web', ['devices.vcpus=4']);
    expect(await resolveImageRef(store, 'web')).toEqual({ ref: 'web', name: 'web', root: store });
    expect(await resolveImageRef(store, 'web@stable')).toMatchObject({
      ref: 'web@stable',
      release: { revision: 1 },
      root: releasePaths.releaseDir(store, 'web', 1),
    });
    await expect(resolveImageRef(store, 'web@beta')).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: "image 'web' has no channel 'beta'",
    });
    await expect(resolveImageRef(store, 'web@2')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('outlive their image, whose name is then not reused', async () => {
    const store = await storeWithContent();
    await createRelease(store, 'web', { channels: ['stable'] });
    await removeImage(store, 'web', { force: true });
    expect((await listReleases(store, 'web')).map((r) => r.revision)).toEqual([1]);
    await expect(createImage(store, 'web')).rejects.toMatchObject({
      code: 'CONFLICT',
      message: "image 'web' was removed but its releases remain",
    });
  });

  it('refuse an image whose disk has no content or whose blob is missing', async () => {
    const store = await makeStore(GOOD_STORE);
    await expect(createRelease(store, 'web')).rejects.toMatchObject({
      code: 'INTEGRITY',
      message: "the blob of disk 'system' of web is missing",
    });
    await putBlob(store, SHA);
    await expect(createRelease(store, 'web')).rejects.toMatchObject({
      code: 'VALIDATION',
      message: "disk 'data' of web has no content yet",
    });
  });
});

describe('withdrawal', () => {
  it('deprecates and revokes with when and why; a revoked release is refused everywhere', async () => {
    const store = await storeWithContent();
    await createRelease(store, 'web', { channels: ['stable'] });
    await setImage(store, 'web', ['devices.vcpus=4']);
    await createRelease(store, 'web');

    const deprecated = await withdrawRelease(store, 'web@1', 'deprecate', {
      reason: 'slow boot',
      now: NOW,
    });
    expect(deprecated.deprecated).toMatchObject({ at: NOW.toISOString(), reason: 'slow boot' });
    await expect(withdrawRelease(store, 'web@1', 'deprecate')).rejects.toMatchObject({
      code: 'CONFLICT',
    });
    // stable points at 1: revoking it waits until the channel moves
    await expect(
      withdrawRelease(store, 'web@1', 'revoke', { reason: 'CVE-2026-1' }),
    ).rejects.toMatchObject({
      code: 'CONFLICT',
      message: 'channel stable of web points at web@1',
    });
    expect(await setChannel(store, 'web', 'stable', 2)).toEqual({
      image: 'web',
      channel: 'stable',
      revision: 2,
      previous: 1,
    });
    await withdrawRelease(store, 'web@1', 'revoke', { reason: 'CVE-2026-1', now: NOW });
    await expect(setChannel(store, 'web', 'stable', 1)).rejects.toMatchObject({
      code: 'CONFLICT',
      message: "web@1 is revoked: channel 'stable' cannot point at it",
    });
    await expect(setChannel(store, 'web', 'stable', 7)).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    expect((await listReleases(store, 'web')).map((r) => r.state)).toEqual(['revoked', 'active']);
    const resolved = await resolveImageRef(store, 'web@1');
    expect(() => refuseRevoked(resolved)).toThrow(
      expect.objectContaining({
        code: 'INTEGRITY',
        message: `web@1 is revoked since ${NOW.toISOString()}: CVE-2026-1`,
      }),
    );
    await expect(withdrawRelease(store, 'web', 'revoke')).rejects.toMatchObject({
      code: 'USAGE',
    });
  });

  it('withdraws the blobs only revoked releases name, not one a live image or release still uses', async () => {
    const store = await storeWithContent();
    await createRelease(store, 'web');
    // the image moves on to another system disk: the first release alone names SHA now
    const NEW = 'c'.repeat(64);
    await putBlob(store, NEW);
    await setImage(store, 'web', [`disks[0].sha256=${NEW}`]);
    await createRelease(store, 'web');
    expect(await revokedOnlyBlobs(store)).toEqual(new Map());
    await withdrawRelease(store, 'web@1', 'revoke', { reason: 'CVE-2026-1', now: NOW });
    // DATA_SHA: release 2 and the image still name it
    expect(await revokedOnlyBlobs(store)).toEqual(
      new Map([[SHA, `web@1 (revoked at ${NOW.toISOString()}: CVE-2026-1)`]]),
    );
  });
});
