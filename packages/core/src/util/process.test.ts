import { describe, expect, it } from 'vitest';
import { processRunner } from './process.ts';

describe('processRunner', () => {
  const runner = processRunner();

  it('returns stdout; a failure rejects with the exit code and stderr', async () => {
    expect((await runner.run('sh', ['-c', 'echo out'])).stdout).toBe('out');
    await expect(runner.run('sh', ['-c', 'echo why >&2; exit 3'])).rejects.toMatchObject({
      exitCode: 3,
      stderr: 'why',
    });
  });

  it('rejects with code ENOENT for a program that is not installed', async () => {
    await expect(runner.run('imgctl-no-such-program', [])).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('replaces the environment with env, or adds to it with extendEnv', async () => {
    const show = ['-c', 'echo "${HOME:-none} $EXTRA"'];
    const only = await runner.run('/bin/sh', show, { env: { EXTRA: 'x' } });
    expect(only.stdout).toBe('none x');
    const added = await runner.run('/bin/sh', show, { env: { EXTRA: 'x' }, extendEnv: true });
    expect(added.stdout).toBe(`${process.env.HOME ?? 'none'} x`);
  });

  it('passes each line of stdout and stderr to onLine as it comes', async () => {
    const lines: string[] = [];
    await runner.run('sh', ['-c', 'echo one; echo two >&2'], { onLine: (l) => lines.push(l) });
    expect(lines).toEqual(['one', 'two']);
  });

  it('terminates the program when the signal is aborted', async () => {
    const controller = new AbortController();
    const run = runner.run('sleep', ['30'], { signal: controller.signal });
    controller.abort();
    await expect(run).rejects.toMatchObject({ signal: 'SIGTERM' });
  });

  it('kills a program that ignores SIGTERM, and what it started, a few seconds after the abort', async () => {
    const controller = new AbortController();
    const started = Date.now();
    const run = runner.run('sh', ['-c', 'trap "" TERM; sleep 30 & wait'], {
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 200);
    await expect(run).rejects.toMatchObject({ signal: 'SIGKILL' });
    expect(Date.now() - started).toBeLessThan(15_000);
  }, 20_000);
});
