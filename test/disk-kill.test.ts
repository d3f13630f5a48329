/**
 * Killed midway: SIGKILL a real `imgctl disk add` of 512 MiB at several points (while starting,
 * while copying, after the copy while the blob is synced and the descriptor written) and check
 * the store is either exactly as before or complete, and that the next run succeeds.
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { copyTree, IMGCTL_BIN, makeStore, makeTempDir, runCli } from './helpers/index.ts';

const MiB = 1024 * 1024;
const SIZE = 512 * MiB;

/** 512 MiB of incompressible, non-zero bytes (AES-CTR keystream: far faster than randomBytes). */
async function writeDisk(path: string): Promise<void> {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(16 * MiB);
  const handle = await open(path, 'w');
  for (let i = 0; i < SIZE / zeros.length; i++) await handle.write(cipher.update(zeros));
  await handle.close();
}

/**
 * A hash of what the store holds for its users: every file except runtime state (.state/),
 * temporary files (.blobs/tmp/) and blobs no image.yaml names (orphans are harmless; gc
 * removes them). Named blobs are hashed by content, so a half-written one would show.
 */
async function storeState(store: string): Promise<string> {
  const named = new Set<string>();
  const images = await readdir(join(store, 'images'), { withFileTypes: true });
  for (const image of images.filter((e) => e.isDirectory()).map((e) => e.name)) {
    const doc = parse(await readFile(join(store, 'images', image, 'image.yaml'), 'utf8')) as {
      disks: Array<{ sha256?: string; blob?: boolean }>;
    };
    for (const d of doc.disks) if (d.blob && d.sha256) named.add(d.sha256);
  }
  const hash = createHash('sha256');
  const entries = await readdir(store, { recursive: true, withFileTypes: true });
  const files = entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(store.length + 1))
    .filter((rel) => !rel.startsWith('.state/') && !rel.startsWith('.blobs/tmp/'))
    .filter((rel) => !rel.startsWith('.blobs/sha256/') || named.has(rel.split('/').at(-1)!))
    .sort();
  for (const rel of files) {
    hash.update(`${rel}\n`);
    for await (const chunk of createReadStream(join(store, rel))) hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

function diskAdd(store: string, file: string) {
  return execa(
    process.execPath,
    [IMGCTL_BIN, 'disk', 'add', 'web', file, '--id', 'root', '--use', 'system', '--store', store],
    {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
      extendEnv: false,
      reject: false,
    },
  );
}

describe('killed midway', () => {
  it('slow: SIGKILL during a 512 MiB disk add leaves the store as before or complete; the next run succeeds', async () => {
    const { dir: base } = await makeStore();
    expect((await runCli(['image', 'create', 'web', '--store', base])).exitCode).toBe(0);
    const { dir } = await makeTempDir();
    const disk = join(dir, 'root.raw');
    await writeDisk(disk);
    const before = await storeState(base);

    // The complete state, and how long a whole run takes here.
    const { dir: reference } = await copyTree(base);
    const started = performance.now();
    const full = await diskAdd(reference, disk);
    const duration = performance.now() - started;
    expect(full.exitCode, full.stderr).toBe(0);
    const complete = await storeState(reference);
    expect(complete).not.toBe(before);

    // Kill points: on progress lines (start, mid-copy, copy done: blob sync, rename and the
    // descriptor write follow) and at late fractions of a whole run.
    const points: Array<{ line?: string; fraction?: number }> = [
      { line: 'adding' },
      { line: '10%' },
      { line: '50%' },
      { line: '100%' },
      { fraction: 0.85 },
      { fraction: 0.95 },
    ];
    const outcomes: string[] = [];
    for (const point of points) {
      const { dir: store } = await copyTree(base);
      const child = diskAdd(store, disk);
      if (point.line !== undefined) {
        const line = point.line;
        await new Promise<void>((resolve) => {
          child.stderr?.on('data', (chunk: Buffer) => {
            if (chunk.toString().includes(line)) resolve();
          });
          void child.then(() => resolve());
        });
      } else {
        await new Promise((resolve) => setTimeout(resolve, duration * point.fraction!));
      }
      child.kill('SIGKILL');
      const result = await child;
      const state = await storeState(store);
      const outcome = state === before ? 'before' : state === complete ? 'complete' : 'HALF';
      outcomes.push(`${point.line ?? point.fraction}: ${result.signal ?? 'exited'} → ${outcome}`);
      expect(outcome, outcomes.join('\n')).not.toBe('HALF');

      const again = await diskAdd(store, disk);
      expect(again.exitCode, again.stderr).toBe(0);
      expect(await storeState(store)).toBe(complete);
      const gc = await runCli(['verify', '--gc', '--store', store]);
      expect(gc.exitCode, gc.stderr).toBe(0);
      expect(await readdir(join(store, '.blobs/tmp'))).toEqual([]);
    }
    // At least one kill must have interrupted a run (else this test proves nothing).
    expect(
      outcomes.some((o) => o.includes('SIGKILL')),
      outcomes.join('\n'),
    ).toBe(true);
  });
});
