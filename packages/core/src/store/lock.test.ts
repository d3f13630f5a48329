import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { withStoreLock } from './lock.ts';

let store: string;
beforeEach(async () => {
  store = await mkdtemp(join(tmpdir(), 'imgctl-lock-'));
});
afterEach(async () => {
  await rm(store, { recursive: true, force: true });
});

async function deadPid(): Promise<number> {
  const child = spawn('true');
  await once(child, 'exit');
  return child.pid!;
}

describe('withStoreLock', () => {
  it('holds the lock with its pid in it, and lets one writer of this process in at a time', async () => {
    let inside = 0;
    let most = 0;
    const pids: string[] = [];
    await Promise.all(
      Array.from({ length: 8 }, () =>
        withStoreLock(store, async () => {
          inside += 1;
          most = Math.max(most, inside);
          pids.push(await readFile(join(store, '.state/lock'), 'utf8'));
          await new Promise((resolve) => setTimeout(resolve, 5));
          inside -= 1;
        }),
      ),
    );
    expect(most).toBe(1);
    expect(pids).toEqual(Array.from({ length: 8 }, () => `${process.pid}\n`));
    expect(await readdir(join(store, '.state'))).toEqual([]);
  });

  it("takes over the lock of a writer that was killed, and removes its attempts' files", async () => {
    const dead = await deadPid();
    await mkdir(join(store, '.state'));
    await writeFile(join(store, '.state/lock'), `${dead}\n`);
    await writeFile(join(store, '.state', `lock.${dead}.0a1b2c3d`), `${dead}\n`);
    const live = `lock.${process.pid}.99999999`;
    await writeFile(join(store, '.state', live), `${process.pid}\n`);
    expect(await withStoreLock(store, async () => 'ran', { timeoutMs: 2000 })).toBe('ran');
    expect(await readdir(join(store, '.state'))).toEqual([live]);
  });

  it('waits for a live writer and then says the store is locked', async () => {
    await mkdir(join(store, '.state'));
    await writeFile(join(store, '.state/lock'), `${process.ppid}\n`);
    await expect(withStoreLock(store, async () => 'ran', { timeoutMs: 200 })).rejects.toMatchObject(
      {
        code: 'CONFLICT',
      },
    );
  });
});
