import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseRange, type StoreWatch, watchStore } from './files.ts';
import { parseTarget } from './server.ts';

describe('parseRange', () => {
  it.each([
    ['bytes=0-99', 1000, { start: 0, end: 99 }],
    ['bytes=900-', 1000, { start: 900, end: 999 }],
    ['bytes=900-5000', 1000, { start: 900, end: 999 }],
    ['bytes=-100', 1000, { start: 900, end: 999 }],
    ['bytes=-5000', 1000, { start: 0, end: 999 }],
    ['bytes=1000-', 1000, 'unsatisfiable'],
    ['bytes=0-', 0, 'unsatisfiable'],
    ['bytes=-0', 1000, 'unsatisfiable'],
    ['bytes=5-1', 1000, undefined],
    ['bytes=0-1,5-6', 1000, undefined],
    ['items=0-1', 1000, undefined],
    [undefined, 1000, undefined],
  ])('%s of %d bytes', (header, size, expected) => {
    expect(parseRange(header, size)).toEqual(expected);
  });
});

describe('parseTarget', () => {
  it('decodes segments without normalizing them', () => {
    expect(parseTarget('/v1/images/web/files/custom_scripts/base/10-a.sh?x=1').segments).toEqual([
      'v1',
      'images',
      'web',
      'files',
      'custom_scripts',
      'base',
      '10-a.sh',
    ]);
  });
  it.each([
    '/v1/images/../etc',
    '/v1/images/%2e%2e/x',
    '/v1/images/a%2fb',
    '/v1/images/a%00b',
    '/v1/images//etc',
    '/v1/images/%zz',
    'http://example.com/v1',
  ])('refuses %s', (target) => {
    expect(() => parseTarget(target)).toThrow(expect.objectContaining({ status: 400 }));
  });
});

describe('watchStore', () => {
  let dir: string;
  let watcher: StoreWatch;
  /** what a plan of image db with a system depends on */
  let planDirs: string[];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'imgctl-watch-'));
    for (const d of ['images/web/records', 'images/db/records', 'systems', '.state/events', 'keys'])
      mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, 'systems/web01.yaml'), 'a');
    watcher = watchStore(dir, () => undefined);
    planDirs = ['', 'images', 'images/db', 'images/db/records', 'systems'].map((d) => join(dir, d));
  });
  afterEach(() => {
    watcher.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The stamp of `dirs` before `change`, and once its events have been read. */
  async function around(
    change: () => void,
    dirs = planDirs,
  ): Promise<{ before: number; now: number }> {
    await watcher.settled();
    const before = watcher.stamp(dirs)!;
    change();
    await watcher.settled();
    return { before, now: watcher.stamp(dirs)! };
  }

  it('sees a change once its event is read: at the latest in the check phase of this turn', async () => {
    await watcher.settled();
    const before = watcher.stamp(planDirs);
    expect(before).toEqual(expect.any(Number));
    writeFileSync(join(dir, 'systems/web01.yaml'), 'b');
    // The event is queued in the kernel but not read yet: this is why routes await settled().
    expect(watcher.stamp(planDirs)).toBe(before);
    await watcher.settled();
    expect(watcher.stamp(planDirs)).not.toBe(before);
  });

  it.each([
    [
      'a rename over a file',
      (d: string) => {
        writeFileSync(join(d, 'systems/web01.yaml.tmp'), 'c');
        renameSync(join(d, 'systems/web01.yaml.tmp'), join(d, 'systems/web01.yaml'));
      },
    ],
    ['a new record', (d: string) => writeFileSync(join(d, 'images/db/records/x.yaml'), 'x')],
    ['a removed system', (d: string) => rmSync(join(d, 'systems/web01.yaml'))],
    ['store.yaml', (d: string) => writeFileSync(join(d, 'store.yaml'), 'x')],
    [
      'systems/ replaced',
      (d: string) => {
        renameSync(join(d, 'systems'), join(d, 'systems.old'));
        mkdirSync(join(d, 'systems'));
      },
    ],
  ])('moves on %s', async (_what, change) => {
    const { before, now } = await around(() => change(dir));
    expect(now).not.toBe(before);
  });

  it('keeps the stamp of directories that did not change', async () => {
    const web = ['', 'images', 'images/web', 'images/web/records'].map((d) => join(dir, d));
    const g = await around(() => writeFileSync(join(dir, 'images/db/records/x.yaml'), 'x'), web);
    expect(g.now).toBe(g.before);
  });

  it('watches a new image directory and a replaced one', async () => {
    const img = ['', 'images', 'images/new', 'images/new/records'].map((d) => join(dir, d));
    let g = await around(
      () => mkdirSync(join(dir, 'images/new/records'), { recursive: true }),
      img,
    );
    expect(g.now).not.toBe(g.before);
    g = await around(() => writeFileSync(join(dir, 'images/new/records/default.yaml'), 'x'), img);
    expect(g.now).not.toBe(g.before);
    g = await around(() => {
      renameSync(join(dir, 'images/new'), join(dir, 'new.old'));
      mkdirSync(join(dir, 'images/new/records'), { recursive: true });
    }, img);
    expect(g.now).not.toBe(g.before);
    g = await around(() => writeFileSync(join(dir, 'images/new/records/default.yaml'), 'y'), img);
    expect(g.now).not.toBe(g.before);
  });

  it('watches a directory it is given, and ignores the rest of the store', async () => {
    const withKeys = [...planDirs, join(dir, 'keys')];
    let g = await around(
      () => writeFileSync(join(dir, '.state/events/web01.jsonl'), '{}\n'),
      withKeys,
    );
    expect(g.now).toBe(g.before);
    g = await around(() => writeFileSync(join(dir, 'keys/signing.key'), 'k'), withKeys);
    expect(g.now).toBe(g.before);
    watcher.add(join(dir, 'keys'));
    g = await around(() => writeFileSync(join(dir, 'keys/signing.key'), 'l'), withKeys);
    expect(g.now).not.toBe(g.before);
  });

  it('says nothing may be kept once closed', () => {
    watcher.close();
    expect(watcher.stamp(planDirs)).toBeUndefined();
  });
});
