import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isAlive } from './pid.ts';

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
