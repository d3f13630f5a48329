/**
 * `imgctl disk add`, end to end with the real qemu-img: content into .blobs/, format and size
 * from the content, sparse stays sparse, backing files refused, revision bumped.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { hashTree, IMGCTL_BIN, makeStore, makeTempDir, MiB, runCli } from './helpers/index.ts';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

async function storeWithImage(): Promise<string> {
  const { dir } = await makeStore();
  const created = await runCli(['image', 'create', 'web', '--store', dir]);
  expect(created.exitCode, created.stderr).toBe(0);
  return dir;
}

const imageDoc = async (store: string) =>
  parse(await readFile(join(store, 'images/web/image.yaml'), 'utf8')) as {
    revision: number;
    disks: Array<Record<string, unknown>>;
  };

const blobFile = (store: string, hex: string) => join(store, '.blobs/sha256', hex.slice(0, 2), hex);

async function qemuImg(...args: string[]): Promise<void> {
  await execa('qemu-img', args);
}

describe('imgctl disk add', () => {
  it('adds a raw disk: blob named by its sha256, format and size from qemu-img, revision bumped, comments kept', async () => {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    const data = randomBytes(3 * MiB);
    await writeFile(join(dir, 'root.img'), data);
    const before = await imageDoc(store);

    const r = await runCli(
      ['disk', 'add', 'web', join(dir, 'root.img'), '--id', 'root', '--use', 'system', '--json'],
      { cwd: store },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const disk = {
      id: 'root',
      use: 'system',
      format: 'raw',
      size: '3MiB',
      sha256: sha256(data),
      blob: true,
    };
    const result = JSON.parse(r.stdout);
    expect(result).toMatchObject({
      image: 'web',
      revision: before.revision + 1,
      changed: true,
      disk,
      blob: { sha256: sha256(data), size: data.length, reused: false },
    });
    expect((await readFile(blobFile(store, sha256(data)))).equals(data)).toBe(true);

    const text = await readFile(join(store, 'images/web/image.yaml'), 'utf8');
    expect(text).toContain('# add the content with'); // the scaffold's comment survived
    const after = await imageDoc(store);
    expect(after.revision).toBe(before.revision + 1);
    expect(after.disks.find((d) => d.id === 'root')).toEqual(disk);
    const validate = await runCli(['image', 'validate', '--store', store]);
    expect(validate.exitCode, validate.stderr).toBe(0);
  });

  it('reads the format from the content: a qcow2 named .raw is recorded as qcow2 with its virtual size', async () => {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    const file = join(dir, 'looks-like.raw');
    await qemuImg('create', '-q', '-f', 'qcow2', file, '2G');
    const r = await runCli(
      ['disk', 'add', 'web', file, '--id', 'data', '--use', 'data', '--json'],
      {
        cwd: store,
      },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const content = await readFile(file);
    expect(JSON.parse(r.stdout).disk).toEqual({
      id: 'data',
      use: 'data',
      format: 'qcow2',
      size: '2GiB',
      sha256: sha256(content),
      blob: true,
    });
    // a disk id the descriptor did not declare is appended to disks:
    expect((await imageDoc(store)).disks.map((d) => d.id)).toEqual(['root', 'data']);
    expect((await readFile(blobFile(store, sha256(content)))).equals(content)).toBe(true);

    const wrong = await runCli(
      ['disk', 'add', 'web', file, '--id', 'data', '--use', 'data', '--format', 'raw'],
      { cwd: store },
    );
    expect(wrong.exitCode).toBe(3);
    expect(wrong.stderr).toContain('the content is qcow2, not raw');
  });

  it('keeps a sparse file sparse (compared with stat blocks)', async () => {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    const file = join(dir, 'sparse.raw');
    const handle = await open(file, 'w');
    await handle.truncate(256 * MiB);
    const data = randomBytes(2 * MiB);
    await handle.write(data, 0, data.length, 100 * MiB);
    await handle.close();
    const source = await stat(file);

    const r = await runCli(
      ['disk', 'add', 'web', file, '--id', 'root', '--use', 'system', '--json'],
      {
        cwd: store,
      },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const { sha256: hex } = JSON.parse(r.stdout).disk;
    const blob = await stat(blobFile(store, hex));
    expect(blob.size).toBe(256 * MiB);
    expect(blob.blocks).toBeLessThanOrEqual(source.blocks);
    expect(blob.blocks * 512).toBeLessThan(4 * MiB);
    const content = Buffer.alloc(256 * MiB);
    data.copy(content, 100 * MiB);
    expect(hex).toBe(sha256(content));
  });

  it('stores a mostly-empty sparse raw file as qcow2 and says why; --keep-raw keeps it raw', async () => {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    const file = join(dir, 'big.raw');
    const handle = await open(file, 'w');
    await handle.truncate(2048 * MiB);
    const data = randomBytes(8 * MiB);
    await handle.write(data, 0, data.length, 1500 * MiB);
    await handle.close();

    const r = await runCli(['disk', 'add', 'web', file, '--id', 'root', '--use', 'system'], {
      cwd: store,
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      'disk root: storing as qcow2: a sparse raw file of 2GiB holding 8MiB',
    );
    expect(r.stdout).toMatch(/disk root \(system, qcow2, 2GiB\)/);
    expect(r.stdout).toContain('stored as qcow2, not raw:');
    const disk = (await imageDoc(store)).disks.find((d) => d.id === 'root')!;
    expect(disk).toMatchObject({ format: 'qcow2', size: '2GiB', blob: true });
    const blob = blobFile(store, disk.sha256 as string);
    expect((await stat(blob)).size).toBeLessThan(16 * MiB); // only the data
    // the same guest-visible bytes, and the blob passes every check
    await qemuImg('compare', '-q', '-f', 'raw', '-F', 'qcow2', file, blob);
    const verify = await runCli(['verify', '--store', store]);
    expect(verify.exitCode, verify.stdout + verify.stderr).toBe(0);

    const raw = await runCli(
      ['disk', 'add', 'web', file, '--id', 'root', '--use', 'system', '--keep-raw', '--json'],
      { cwd: store },
    );
    expect(raw.exitCode, raw.stderr).toBe(0);
    expect(JSON.parse(raw.stdout).disk).toMatchObject({ format: 'raw', size: '2GiB' });

    // a small sparse disk (the tiny appliance's 64 MiB) always stays raw
    const small = join(dir, 'small.raw');
    await writeFile(small, data.subarray(0, MiB));
    await truncate(small, 64 * MiB);
    const kept = await runCli(
      ['disk', 'add', 'web', small, '--id', 'data', '--use', 'data', '--json'],
      { cwd: store },
    );
    expect(kept.exitCode, kept.stderr).toBe(0);
    expect(JSON.parse(kept.stdout).disk).toMatchObject({ format: 'raw', size: '64MiB' });
  });

  it('refuses a qcow2 with a backing file (exit 3) and leaves the store unchanged', async () => {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '64M');
    await qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'qcow2',
      '-b',
      join(dir, 'base.qcow2'),
      join(dir, 'overlay.qcow2'),
    );
    const before = await hashTree(store);
    const r = await runCli(
      ['disk', 'add', 'web', join(dir, 'overlay.qcow2'), '--id', 'root', '--use', 'system'],
      { cwd: store },
    );
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain('backing file');
    expect(r.stderr).toContain('qemu-img convert');
    expect(await hashTree(store)).toBe(before);
  });

  it('re-adding identical content reuses the blob and keeps the revision', async () => {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    await writeFile(join(dir, 'a.img'), randomBytes(MiB));
    const args = [
      'disk',
      'add',
      'web',
      join(dir, 'a.img'),
      '--id',
      'root',
      '--use',
      'system',
      '--json',
    ];
    const first = JSON.parse((await runCli(args, { cwd: store })).stdout);
    const second = await runCli(args, { cwd: store });
    expect(second.exitCode, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({
      revision: first.revision,
      changed: false,
      blob: { sha256: first.blob.sha256, reused: true },
    });
    expect((await imageDoc(store)).revision).toBe(first.revision);
    // the same content under another disk id: one blob, a new revision
    const third = JSON.parse(
      (
        await runCli([...args.slice(0, 4), '--id', 'data', '--use', 'data', '--json'], {
          cwd: store,
        })
      ).stdout,
    );
    expect(third).toMatchObject({ revision: first.revision + 1, blob: { reused: true } });
    expect(await readdir(join(store, '.blobs/sha256', first.blob.sha256.slice(0, 2)))).toEqual([
      first.blob.sha256,
    ]);
  });

  it('adds a scratch disk with --size and no content; refuses mixed sources and size 0 (exit 2)', async () => {
    const store = await storeWithImage();
    const r = await runCli(
      [
        'disk',
        'add',
        'web',
        '--id',
        'tmp',
        '--use',
        'scratch',
        '--size',
        '10GiB',
        '--format',
        'qcow2',
        '--json',
      ],
      { cwd: store },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await imageDoc(store)).disks.at(-1)).toEqual({
      id: 'tmp',
      use: 'scratch',
      format: 'qcow2',
      size: '10GiB',
    });
    const bad = await runCli(
      ['disk', 'add', 'web', '--id', 'x', '--use', 'system', '--size', '1GiB'],
      {
        cwd: store,
      },
    );
    expect(bad.exitCode).toBe(2);
    const empty = await runCli(
      ['disk', 'add', 'web', '--id', 'x', '--use', 'scratch', '--size', '0'],
      { cwd: store },
    );
    expect(empty.exitCode, empty.stderr).toBe(2);
    expect(empty.stderr).toMatch(/--size 0: a scratch disk needs room/);
    const missing = await runCli(
      ['disk', 'add', 'nope', '--id', 'x', '--use', 'scratch', '--size', '1GiB'],
      {
        cwd: store,
      },
    );
    expect(missing.exitCode).toBe(4);
  });

  it('--url records the url and sha256 (blob only with --keep); a 404 is exit 4', async () => {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    const file = join(dir, 'remote.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', file, '1G');
    const content = await readFile(file);
    const server = createServer((req, res) => {
      if (req.url !== '/remote.qcow2') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-length': String(content.length) });
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/remote.qcow2`;
      const r = await runCli(
        ['disk', 'add', 'web', '--id', 'root', '--use', 'system', '--url', url, '--json'],
        {
          cwd: store,
        },
      );
      expect(r.exitCode, r.stderr).toBe(0);
      expect((await imageDoc(store)).disks[0]).toEqual({
        id: 'root',
        use: 'system',
        format: 'qcow2',
        size: '1GiB',
        sha256: sha256(content),
        url,
      });
      expect(await readdir(join(store, '.blobs'))).not.toContain('sha256');

      const kept = await runCli(
        ['disk', 'add', 'web', '--id', 'root', '--use', 'system', '--url', url, '--keep', '--json'],
        { cwd: store },
      );
      expect(kept.exitCode, kept.stderr).toBe(0);
      expect((await imageDoc(store)).disks[0]).toMatchObject({ blob: true, url });
      expect((await readFile(blobFile(store, sha256(content)))).equals(content)).toBe(true);

      const missing = await runCli(
        ['disk', 'add', 'web', '--id', 'root', '--use', 'system', '--url', `${url}.gone`],
        {
          cwd: store,
        },
      );
      expect(missing.exitCode).toBe(4);
      expect(await readdir(join(store, '.blobs/tmp'))).toEqual([]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('imgctl disk add on a terminal', () => {
  /** Runs the real imgctl on a pseudo-terminal `cols` wide (script(1)); what the terminal got. */
  async function onTerminal(cols: number, args: string[]) {
    const argv = [process.execPath, IMGCTL_BIN, ...args];
    expect(argv.every((a) => !a.includes("'"))).toBe(true);
    const command = `stty cols ${cols} rows 40; exec ${argv.map((a) => `'${a}'`).join(' ')}`;
    const run = await execa('script', ['-qefc', command, '/dev/null'], {
      reject: false,
      env: { TERM: 'xterm' },
    });
    return { exitCode: run.exitCode, screen: String(run.stdout) };
  }

  async function addOnTerminal(cols: number) {
    const store = await storeWithImage();
    const { dir } = await makeTempDir();
    await writeFile(join(dir, 'data.img'), randomBytes(48 * MiB));
    const args = ['--store', store, 'disk', 'add', 'web', join(dir, 'data.img')];
    const run = await onTerminal(cols, [...args, '--id', 'data', '--use', 'data']);
    expect(run.exitCode, run.screen).toBe(0);
    expect((await imageDoc(store)).disks.map((d) => d.id)).toContain('data');
    return run.screen;
  }

  it('draws listr2 tasks: the step, its percentage, a check mark when done', async () => {
    const screen = await addOnTerminal(100);
    expect(screen).toContain('\u001b[');
    expect(screen).toMatch(/disk data: adding .*data\.img: 100% \(48MiB of 48MiB\)/);
    expect(screen).toMatch(/\u2714.*disk data: adding/);
  });

  it('prints plain lines on a terminal that reports no width', async () => {
    const screen = await addOnTerminal(0);
    expect(screen).not.toContain('\u001b[');
    const lines = screen.split(/\r?\n/);
    expect(lines[0]).toMatch(/^disk data: adding \S+data\.img$/);
    expect(lines.filter((l) => / \d+% \(/.test(l)).length).toBeGreaterThan(3);
  });
});
