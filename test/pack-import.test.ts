/**
 * pack → import → export with the real binaries: the archive round-trips an image exactly, is
 * deterministic, imports from a file or a URL, renames with --as, replaces only with --force,
 * and an import killed at any point leaves the store as before or complete. The memory test packs
 * and imports a 2 GiB image with the bundle (`scripts/build.mjs`, what is installed; as for
 * bench/store-scale, limits apply to it: the source entry adds tsx's loader thread, ~40 MB,
 * and is only reported) and reads the peak RSS from /usr/bin/time.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  execImgctl,
  hashTree,
  IMGCTL_BIN,
  REPO_ROOT,
  makeStore,
  makeTempDir,
  runCli,
  storeState,
  writeRandomFile,
  MiB,
} from './helpers/index.ts';

async function cli(args: string[], store: string) {
  const result = await runCli([...args, '--store', store]);
  if (result.exitCode !== 0) throw new Error(`imgctl ${args.join(' ')}: ${result.stderr}`);
  return result;
}

/** A store with image `web`: a 4 MiB raw system disk with a hole, a custom script and two records. */
async function storeWithImage(size = 4 * MiB) {
  const { dir: store } = await makeStore();
  await cli(['image', 'create', 'web'], store);
  await cli(['record', 'add', 'web', 'large', '--vcpus', '4'], store);
  const { dir } = await makeTempDir();
  const disk = join(dir, 'root.raw');
  await writeRandomFile(disk, size);
  const handle = await open(disk, 'r+');
  await handle.truncate(size + 2 * MiB); // a 2 MiB hole at the end
  await handle.close();
  await writeFile(join(store, 'images/web/provision.sh'), '#!/bin/sh\necho provisioned\n', {
    mode: 0o755,
  });
  await cli(['disk', 'add', 'web', disk, '--id', 'root', '--use', 'system'], store);
  return { store, dir };
}

function blobsOf(store: string, image: string): Promise<string[]> {
  return readFile(join(store, 'images', image, 'image.yaml'), 'utf8').then((t) =>
    (parse(t) as { disks: Array<{ sha256?: string }> }).disks.flatMap((d) =>
      d.sha256 ? [d.sha256] : [],
    ),
  );
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('pack and import', () => {
  it('round-trips an image into another store exactly, blobs included, and packs deterministically', async () => {
    const { store, dir } = await storeWithImage();
    const archive = join(dir, 'web.tar.gz');
    const packed = await execImgctl(['pack', 'web', '-o', archive, '--store', store, '--json']);
    expect(packed.exitCode, packed.stderr).toBe(0);
    expect(JSON.parse(packed.stdout)).toMatchObject({
      image: 'web',
      blobs: 1,
      compression: 'gzip',
    });
    const again = join(dir, 'again.tar.gz');
    await cli(['pack', 'web', '-o', again], store);
    expect(await sha256Of(again)).toBe(await sha256Of(archive));

    const { dir: other } = await makeStore();
    const imported = await execImgctl(['import', archive, '--store', other]);
    expect(imported.exitCode, imported.stderr).toBe(0);
    expect(imported.stdout).toContain("imported image 'web' revision 2");
    expect(await hashTree(join(other, 'images/web'))).toBe(
      await hashTree(join(store, 'images/web')),
    );
    const [blob] = await blobsOf(other, 'web');
    const blobFile = join(other, '.blobs/sha256', blob!.slice(0, 2), blob!);
    expect(await sha256Of(blobFile)).toBe(blob);
    // the hole stayed a hole: fewer blocks than bytes
    const st = await stat(blobFile);
    expect(st.blocks * 512).toBeLessThan(st.size);
    expect((await runCli(['image', 'validate', '--store', other])).exitCode).toBe(0);
    expect(await readdir(join(other, '.state'))).not.toContainEqual(
      expect.stringMatching(/^import-/),
    );
  });

  it('--as renames the image and its records; a second import is a conflict unless --force', async () => {
    const { store, dir } = await storeWithImage();
    const archive = join(dir, 'web.tar');
    await cli(['pack', 'web', '-o', archive], store);
    const before = await hashTree(store);
    const conflict = await runCli(['import', archive, '--store', store]);
    expect(conflict.exitCode).toBe(5);
    expect(conflict.stderr).toContain("image 'web' already exists");
    expect(await hashTree(store)).toBe(before);

    const renamed = await runCli([
      'import',
      archive,
      '--as',
      'web-copy',
      '--store',
      store,
      '--json',
    ]);
    expect(renamed.exitCode, renamed.stderr).toBe(0);
    expect(JSON.parse(renamed.stdout)).toMatchObject({
      image: 'web-copy',
      packedAs: 'web',
      blobsReused: 1,
    });
    const shown = await runCli(['record', 'show', 'web-copy', 'large', '--store', store, '--json']);
    expect(JSON.parse(shown.stdout)).toMatchObject({ image: 'web-copy', name: 'large' });
    expect((await runCli(['image', 'validate', '--store', store])).exitCode).toBe(0);

    await cli(['image', 'set', 'web', 'label=changed'], store);
    const forced = await runCli(['import', archive, '--force', '--store', store, '--json']);
    expect(forced.exitCode, forced.stderr).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({ image: 'web', replaced: true });
    expect(await readFile(join(store, 'images/web/image.yaml'), 'utf8')).not.toContain('changed');
  });

  it('imports from an http:// URL, and a 404 is NOT_FOUND', async () => {
    const { store, dir } = await storeWithImage();
    const archive = join(dir, 'web.tar.gz');
    await cli(['pack', 'web', '-o', archive], store);
    const server = createServer((req, res) => {
      if (req.url === '/cut.tar.gz') {
        // the whole archive announced, half of it sent, then the connection dropped
        void readFile(archive).then((bytes) => {
          res.writeHead(200, { 'content-length': bytes.length });
          res.write(bytes.subarray(0, bytes.length >> 1), () => res.destroy());
        });
        return;
      }
      if (req.url !== '/web.tar.gz') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/gzip' });
      createReadStream(archive).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const { dir: other } = await makeStore();
      const ok = await execImgctl([
        'import',
        `http://127.0.0.1:${port}/web.tar.gz`,
        '--store',
        other,
      ]);
      expect(ok.exitCode, ok.stderr).toBe(0);
      expect(await hashTree(join(other, 'images/web'))).toBe(
        await hashTree(join(store, 'images/web')),
      );
      const missing = await execImgctl([
        'import',
        `http://127.0.0.1:${port}/nope.tar`,
        '--store',
        other,
      ]);
      expect(missing.exitCode).toBe(4);
      const before = await hashTree(other);
      const cut = await execImgctl([
        'import',
        `http://127.0.0.1:${port}/cut.tar.gz`,
        '--store',
        other,
        '--as',
        'webcut',
      ]);
      expect(cut.exitCode, cut.stderr).toBe(1);
      expect(cut.stderr).toMatch(/error\[FAILED\]: the download of .*cut\.tar\.gz broke off/);
      expect(await hashTree(other)).toBe(before);
      const ftp = await execImgctl(['import', 'ftp://127.0.0.1/x.tar', '--store', other]);
      expect(ftp.exitCode).toBe(2);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('.tar.zst goes through the zstd program; an unknown suffix is a usage error', async () => {
    const { store, dir } = await storeWithImage();
    const archive = join(dir, 'web.tar.zst');
    await cli(['pack', 'web', '-o', archive], store);
    const magic = (await readFile(archive)).subarray(0, 4);
    expect(magic.toString('hex')).toBe('28b52ffd');
    const { dir: other } = await makeStore();
    expect((await runCli(['import', archive, '--store', other])).exitCode).toBe(0);
    const zip = await runCli(['pack', 'web', '-o', join(dir, 'web.zip'), '--store', store]);
    expect(zip.exitCode).toBe(2);
    expect(zip.stderr).toContain('FILE.tar.gz');
  });

  it('export writes the descriptor, the files and each disk as ID.FORMAT; a non-empty DIR is refused', async () => {
    const { store, dir } = await storeWithImage();
    const out = join(dir, 'export');
    const result = await execImgctl(['export', 'web', out, '--store', store, '--json']);
    expect(result.exitCode, result.stderr).toBe(0);
    const [blob] = await blobsOf(store, 'web');
    expect(await sha256Of(join(out, 'root.raw'))).toBe(blob);
    // files only: the empty custom_scripts/ directory is not an image file
    expect((await readdir(out)).sort()).toEqual([
      'description.md',
      'image.yaml',
      'kickstart.ks',
      'provision.sh',
      'records',
      'root.raw',
    ]);
    expect((await stat(join(out, 'provision.sh'))).mode & 0o111).not.toBe(0);
    const again = await execImgctl(['export', 'web', out, '--store', store]);
    expect(again.exitCode).toBe(5);
    expect(again.stderr).toContain('is not empty');
  });
});

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

async function stagedBytes(store: string): Promise<number> {
  const state = join(store, '.state');
  let total = 0;
  for (const entry of await readdir(state).catch(() => [])) {
    if (!entry.startsWith('import-')) continue;
    const blobs = join(state, entry, 'blobs');
    for (const f of await readdir(blobs).catch(() => [])) {
      total += (await stat(join(blobs, f)).catch(() => ({ size: 0 }))).size;
    }
  }
  return total;
}

describe('killed midway', () => {
  it('slow: SIGKILL at several points of an import leaves the store as before or complete; the next run succeeds', async () => {
    const size = 256 * MiB;
    const { store: source, dir } = await storeWithImage(size);
    const archive = join(dir, 'web.tar');
    await cli(['pack', 'web', '-o', archive], source);
    const { dir: store } = await makeStore();
    await cli(['image', 'create', 'other'], store);
    const before = await storeState(store);
    const points: Array<[string, () => Promise<boolean>]> = [
      [
        'the staging directory exists',
        async () => (await readdir(join(store, '.state'))).some((e) => e.startsWith('import-')),
      ],
      ['a quarter of the disk is staged', async () => (await stagedBytes(store)) > size / 4],
      ['the whole disk is staged', async () => (await stagedBytes(store)) >= size],
    ];
    const outcomes: string[] = [];
    for (const [point, condition] of points) {
      const child = execa(process.execPath, [IMGCTL_BIN, 'import', archive, '--store', store], {
        reject: false,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
        extendEnv: false,
      });
      let exited = false;
      void child.finally(() => (exited = true));
      await until(async () => exited || (await condition()), point);
      child.kill('SIGKILL');
      const result = await child;
      const complete = await stat(join(store, 'images/web/image.yaml')).then(
        () => true,
        () => false,
      );
      if (complete) {
        expect((await runCli(['image', 'validate', '--store', store])).exitCode).toBe(0);
        const [blob] = await blobsOf(store, 'web');
        expect(await sha256Of(join(store, '.blobs/sha256', blob!.slice(0, 2), blob!))).toBe(blob);
        outcomes.push(`${point}: complete (exit ${result.exitCode ?? result.signal})`);
        await cli(['image', 'remove', 'web'], store);
      } else {
        expect(await storeState(store), point).toBe(before);
        outcomes.push(`${point}: as before`);
      }
    }
    expect(outcomes).toHaveLength(3);
    // the next run succeeds and sweeps the dead runs' staging directories
    const next = await execImgctl(['import', archive, '--store', store]);
    expect(next.exitCode, next.stderr).toBe(0);
    expect(await readdir(join(store, '.state'))).not.toContainEqual(
      expect.stringMatching(/^import-/),
    );
    expect(await hashTree(join(store, 'images/web'))).toBe(
      await hashTree(join(source, 'images/web')),
    );
  }, 300_000);
});

/** Peak RSS in kB of `imgctl ARGS` run from `bin`, as GNU time reports it. */
async function peakRss(
  bin: string,
  args: string[],
): Promise<{ kb: number; exitCode: number; stderr: string }> {
  const result = await execa('/usr/bin/time', ['-v', process.execPath, bin, ...args], {
    reject: false,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
    extendEnv: false,
  });
  const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr);
  return {
    kb: match ? Number(match[1]) : Number.NaN,
    exitCode: result.exitCode ?? -1,
    stderr: result.stderr,
  };
}

describe('memory', () => {
  it('slow: pack and import of a 2 GiB image (.tar and .tar.gz) stay under 150 MB peak RSS', async () => {
    const size = 2048 * MiB;
    const { dir: store } = await makeStore();
    await cli(['image', 'create', 'big'], store);
    const { dir } = await makeTempDir();
    const disk = join(dir, 'big.raw');
    await writeRandomFile(disk, size);
    await cli(['disk', 'add', 'big', disk, '--id', 'root', '--use', 'system'], store);
    await execa('rm', ['-f', disk]);
    await execa(process.execPath, [
      join(REPO_ROOT, 'scripts/build.mjs'),
      '--outdir',
      join(dir, 'dist'),
      '--only',
      'imgctl',
    ]);
    const bundle = join(dir, 'dist/imgctl.mjs');

    // .tar.gz goes through the gzip program, so it stays as flat as .tar
    const peaks: string[] = [];
    for (const suffix of ['tar', 'tar.gz']) {
      const archive = join(dir, `big.${suffix}`);
      const pack = await peakRss(bundle, ['pack', 'big', '-o', archive, '--store', store]);
      expect(pack.exitCode, pack.stderr).toBe(0);
      if (suffix === 'tar') expect((await stat(archive)).size).toBeGreaterThan(size);

      const { dir: other } = await makeStore();
      const imported = await peakRss(bundle, ['import', archive, '--store', other]);
      expect(imported.exitCode, imported.stderr).toBe(0);
      const [blob] = await blobsOf(other, 'big');
      expect((await stat(join(other, '.blobs/sha256', blob!.slice(0, 2), blob!))).size).toBe(size);
      await execa('rm', ['-rf', archive, other]);

      peaks.push(`.${suffix}: pack ${pack.kb} kB, import ${imported.kb} kB`);
      expect(pack.kb, peaks.join('; ')).toBeLessThan(150 * 1000);
      expect(imported.kb, peaks.join('; ')).toBeLessThan(150 * 1000);
    }
    console.log(`peak RSS (2 GiB image): ${peaks.join('; ')}`);
  }, 600_000);
});
