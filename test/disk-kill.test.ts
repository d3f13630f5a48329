/**
 * Killed midway: SIGKILL a real `imgctl disk add` of 512 MiB at several points (while starting,
 * while copying, after the copy while the blob is synced and the descriptor written) and check
 * the store is either exactly as before or complete, and that the next run succeeds.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import {
  copyTree,
  IMGCTL_BIN,
  makeStore,
  makeTempDir,
  runCli,
  storeState,
  writeRandomFile,
  MiB,
} from './helpers/index.ts';

const SIZE = 512 * MiB;

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
    await writeRandomFile(disk, SIZE);
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
  }, 600_000);
});
