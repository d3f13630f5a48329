/**
 * Hostile archives: each is built here byte by byte (tar headers written with node-tar's Header,
 * so checksums are valid and only the lie under test is wrong) and must be refused with exit 3
 * (malformed or unsafe) or 7 (a hash that does not match), leaving the store byte-for-byte
 * unchanged. A well-formed archive built by the same code imports, so each refusal is the lie's.
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Header, Pax } from 'tar';
import { describe, expect, it } from 'vitest';
import { minimalImageYaml } from './helpers/base-store.ts';
import { hashTree, makeStore, makeTempDir, runCli } from './helpers/index.ts';

type EntryType = 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice' | 'FIFO';

interface RawEntry {
  name: string;
  type?: EntryType;
  data?: Buffer;
  /** the size the header claims (default the data's length) */
  size?: number;
  linkpath?: string;
  /** put the name in a pax header (for names a ustar header cannot hold) */
  pax?: boolean;
}

function header(entry: RawEntry): Buffer {
  const block = Buffer.alloc(512);
  const fields = {
    path: entry.name,
    type: entry.type ?? 'File',
    size: entry.size ?? entry.data?.length ?? 0,
    mode: entry.type === 'Directory' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    mtime: new Date(0),
    linkpath: entry.linkpath ?? '',
    uname: '',
    gname: '',
  };
  new Header(fields).encode(block);
  if (!entry.pax) return block;
  return Buffer.concat([new Pax({ path: entry.name }).encode(), block]);
}

/** A tar of `entries`, cut to `truncateAt` bytes when given, with or without the end marker. */
function tar(entries: RawEntry[], options: { truncateAt?: number; eof?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(header(entry));
    if (entry.data && entry.data.length > 0) {
      parts.push(entry.data);
      const pad = (512 - (entry.data.length % 512)) % 512;
      parts.push(Buffer.alloc(pad));
    }
  }
  if (options.eof !== false) parts.push(Buffer.alloc(1024));
  const all = Buffer.concat(parts);
  return options.truncateAt === undefined ? all : all.subarray(0, options.truncateAt);
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

const DISK = Buffer.alloc(1024 * 1024, 7);
const DISK_SHA = sha256(DISK);
const YAML = Buffer.from(
  minimalImageYaml({
    name: 'evil',
    disks: [{ id: 'root', use: 'system', sha256: DISK_SHA, blob: true }],
  }),
);
const RECORD = Buffer.from(
  'apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: evil\nprovision: {}\n',
);

interface ManifestShape {
  format: string;
  image: string;
  revision: number;
  dirs: string[];
  files: Array<{ path: string; size: number; sha256: string; mode: number }>;
  blobs: Array<{ sha256: string; size: number }>;
}

function manifest(change: (m: ManifestShape) => void = () => {}): RawEntry {
  const m: ManifestShape = {
    format: 'imgctl-pack/1',
    image: 'evil',
    revision: 1,
    dirs: ['records'],
    files: [
      { path: 'image.yaml', size: YAML.length, sha256: sha256(YAML), mode: 0o644 },
      { path: 'records/default.yaml', size: RECORD.length, sha256: sha256(RECORD), mode: 0o644 },
    ],
    blobs: [{ sha256: DISK_SHA, size: DISK.length }],
  };
  change(m);
  return { name: 'manifest.json', data: Buffer.from(JSON.stringify(m)) };
}

const GOOD_MEMBERS: RawEntry[] = [
  { name: 'image/records/', type: 'Directory' },
  { name: 'image/image.yaml', data: YAML },
  { name: 'image/records/default.yaml', data: RECORD },
  { name: `blobs/sha256/${DISK_SHA}`, data: DISK },
];

const good = () => tar([manifest(), ...GOOD_MEMBERS]);

const withMember = (extra: RawEntry, change?: (m: ManifestShape) => void) =>
  tar([manifest(change), ...GOOD_MEMBERS, extra]);

const CASES: Array<{ name: string; archive: () => Buffer; exit: number; says: RegExp }> = [
  {
    name: 'tar-slip: a member path with ..',
    archive: () =>
      withMember({
        name: 'image/../../../etc/cron.d/evil',
        data: Buffer.from('* * * * * root id\n'),
      }),
    exit: 3,
    says: /'\.\.'/,
  },
  {
    name: 'tar-slip listed in the manifest too',
    archive: () =>
      withMember({ name: 'image/../evil.sh', data: Buffer.from('x') }, (m) =>
        m.files.push({
          path: '../evil.sh',
          size: 1,
          sha256: sha256(Buffer.from('x')),
          mode: 0o644,
        }),
      ),
    exit: 3,
    says: /unsafe file path/,
  },
  {
    name: 'an absolute path',
    archive: () => withMember({ name: '/tmp/imgctl-evil', data: Buffer.from('x') }),
    exit: 3,
    says: /absolute path/,
  },
  {
    name: 'a symlink leaving the directory',
    archive: () =>
      withMember({ name: 'image/provision.sh', type: 'SymbolicLink', linkpath: '/etc/shadow' }),
    exit: 3,
    says: /symbolic link/,
  },
  {
    name: 'a hard link to a host file',
    archive: () =>
      withMember({ name: 'image/kickstart.ks', type: 'Link', linkpath: '/etc/passwd' }),
    exit: 3,
    says: /hard link/,
  },
  {
    name: 'a character device',
    archive: () => withMember({ name: 'image/disk', type: 'CharacterDevice' }),
    exit: 3,
    says: /device node/,
  },
  {
    name: 'a FIFO',
    archive: () => withMember({ name: 'image/fifo', type: 'FIFO' }),
    exit: 3,
    says: /FIFO/,
  },
  {
    name: 'a member not in the manifest',
    archive: () => withMember({ name: 'image/extra.sh', data: Buffer.from('#!/bin/sh\n') }),
    exit: 3,
    says: /not in the manifest/,
  },
  {
    name: 'a member larger than the manifest declares',
    archive: () =>
      tar([
        manifest(),
        ...GOOD_MEMBERS.slice(0, 3),
        { name: `blobs/sha256/${DISK_SHA}`, data: Buffer.concat([DISK, Buffer.alloc(4096, 1)]) },
      ]),
    exit: 3,
    says: /declares 1052672 bytes but the manifest lists 1048576/,
  },
  {
    name: 'a member claiming gigabytes',
    archive: () =>
      tar([
        manifest(),
        ...GOOD_MEMBERS.slice(0, 3),
        { name: `blobs/sha256/${DISK_SHA}`, size: 8 * 1024 ** 3, data: Buffer.alloc(0) },
      ]),
    exit: 3,
    says: /declares 8589934592 bytes/,
  },
  {
    name: 'a manifest claiming more space than the disk has',
    archive: () =>
      tar(
        [
          manifest((m) => (m.blobs[0]!.size = 2 ** 52)),
          ...GOOD_MEMBERS.slice(0, 3),
          { name: `blobs/sha256/${DISK_SHA}`, size: 2 ** 52, data: Buffer.alloc(0) },
        ],
        { eof: false },
      ),
    exit: 1,
    says: /free/,
  },
  {
    name: 'a file whose content does not match the manifest hash',
    archive: () =>
      tar([
        manifest(),
        ...GOOD_MEMBERS.slice(0, 1),
        {
          name: 'image/image.yaml',
          data: Buffer.from(YAML.toString().replace('256MiB', '999MiB')),
        },
        ...GOOD_MEMBERS.slice(2),
      ]),
    exit: 7,
    says: /does not match the manifest/,
  },
  {
    name: 'a blob whose content does not match its name',
    archive: () =>
      tar([
        manifest(),
        ...GOOD_MEMBERS.slice(0, 3),
        { name: `blobs/sha256/${DISK_SHA}`, data: Buffer.alloc(DISK.length, 8) },
      ]),
    exit: 7,
    says: /disk content .* does not match/,
  },
  {
    name: 'a truncated archive (inside the blob)',
    archive: () => good().subarray(0, good().length - 1024 - 300_000),
    exit: 3,
    says: /truncated/,
  },
  {
    name: 'a truncated archive (a member missing)',
    archive: () => tar([manifest(), ...GOOD_MEMBERS.slice(0, 3)]),
    exit: 3,
    says: /missing/,
  },
  {
    name: 'no end-of-archive marker',
    archive: () => tar([manifest(), ...GOOD_MEMBERS], { eof: false }),
    exit: 3,
    says: /truncated/,
  },
  {
    name: 'the manifest is not first',
    archive: () => tar([...GOOD_MEMBERS, manifest()]),
    exit: 3,
    says: /manifest\.json/,
  },
  {
    name: 'a member appearing twice',
    archive: () => tar([manifest(), ...GOOD_MEMBERS, GOOD_MEMBERS[1]!]),
    exit: 3,
    says: /appears twice/,
  },
  {
    name: 'too many entries',
    archive: () =>
      withMember({ name: 'image/x', data: Buffer.alloc(0) }, (m) => {
        for (let i = 0; i < 20_001; i++) m.dirs.push(`d${i}`);
      }),
    exit: 3,
    says: /more than 20000/,
  },
  {
    name: 'an overlong name',
    archive: () =>
      withMember({ name: `image/${'a/'.repeat(700)}x`, data: Buffer.from('x'), pax: true }),
    exit: 3,
    says: /too long/,
  },
  {
    name: 'a gzip bomb wrapping the archive',
    archive: () =>
      gzipSync(
        tar([
          manifest(),
          ...GOOD_MEMBERS.slice(0, 3),
          { name: `blobs/sha256/${DISK_SHA}`, data: Buffer.alloc(64 * 1024 * 1024) },
        ]),
      ),
    exit: 3,
    says: /declares 67108864 bytes/,
  },
  {
    name: 'not a tar at all',
    archive: () => Buffer.from('this is not an archive\n'.repeat(100)),
    exit: 3,
    says: /does not start with manifest\.json/,
  },
];

describe('hostile archives', () => {
  it('a well-formed archive built the same way imports (the control case)', async () => {
    const { dir: store } = await makeStore();
    const { dir } = await makeTempDir();
    const file = join(dir, 'good.tar');
    await writeFile(file, good());
    const result = await runCli(['import', file, '--store', store]);
    expect(result.exitCode, result.stderr).toBe(0);
    expect((await runCli(['image', 'validate', '--store', store])).exitCode).toBe(0);
  });

  it.each(CASES)('$name is refused and the store is unchanged', async ({ archive, exit, says }) => {
    const { dir: store } = await makeStore();
    await runCli(['image', 'create', 'web', '--store', store]);
    const { dir } = await makeTempDir();
    const file = join(dir, 'hostile.tar');
    await writeFile(file, archive());
    const before = await hashTree(store);
    const result = await runCli(['import', file, '--store', store]);
    expect(result.stderr).toMatch(says);
    expect(result.exitCode, result.stderr).toBe(exit);
    expect(await hashTree(store)).toBe(before);
  });
});
