import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isAlive, processRunner } from './process.ts';

describe('isAlive', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('is true for this process and false for one that has exited', async () => {
    expect(isAlive(process.pid)).toBe(true);
    const child = spawn('true');
    await once(child, 'exit');
    expect(isAlive(child.pid!)).toBe(false);
  });

  it('counts a process of another user (EPERM) as alive, and no such process (ESRCH) as gone', () => {
    const kill = vi.spyOn(process, 'kill');
    const fail = (code: string) => () => {
      throw Object.assign(new Error(code), { code });
    };
    kill.mockImplementation(fail('EPERM'));
    expect(isAlive(4242)).toBe(true);
    kill.mockImplementation(fail('ESRCH'));
    expect(isAlive(4242)).toBe(false);
  });

  it.each([0, -1, 1.5, Number.NaN])('is false for %s, which names no process', (pid) => {
    expect(isAlive(pid)).toBe(false);
  });
});

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
});
