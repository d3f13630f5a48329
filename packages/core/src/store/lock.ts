import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { link, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImgctlError } from '../util/errors.ts';
import { isAlive } from '../util/pid.ts';
import { finishStoreWrites } from './store-txn.ts';

/** The stores whose lock the current async call chain holds, so nested calls do not wait on it. */
const held = new AsyncLocalStorage<ReadonlySet<string>>();

export interface LockOptions {
  /** how long to wait for another writer, ms */
  timeoutMs?: number;
}

/**
 * Runs `fn` holding the store-wide writer lock (`.state/lock`, holding the owner's pid). A lock
 * whose owner is gone is taken over, so a killed writer never wedges the store, and what such a
 * writer committed is completed (finishStoreWrites) before `fn` reads anything.
 */
export async function withStoreLock<T>(
  storeDir: string,
  fn: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  const key = resolve(storeDir);
  const outer = held.getStore();
  if (outer?.has(key)) return fn();
  const stateDir = join(storeDir, '.state');
  await mkdir(stateDir, { recursive: true });
  const lockPath = join(stateDir, 'lock');
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (let attempt = 0; ; attempt++) {
    if (await createLock(lockPath)) break;
    const stalePid = await stalePidOf(lockPath);
    if (stalePid !== undefined && (await stalePidOf(lockPath)) === stalePid) {
      await rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new ImgctlError('CONFLICT', `the store is locked by another writer (${lockPath})`, {
        hint: 'wait for the other imgctl command to finish; remove the file only if no imgctl is running',
      });
    }
    await sleep(Math.min(10 + attempt * 5, 100) + Math.random() * 10);
  }
  try {
    await removeDeadOwnFiles(stateDir);
    await finishStoreWrites(storeDir);
    return await held.run(new Set([...(outer ?? []), key]), fn);
  } finally {
    await rm(lockPath, { force: true });
  }
}

/**
 * Creates the lock with the pid already in it: the pid goes to a file of this attempt's own
 * (`lock.PID.RANDOM`: two attempts of one process never share it), which is then linked as the
 * lock (EEXIST when another writer holds it). A writer killed at any point leaves either no lock
 * or one naming it, never an empty lock nobody could tell was stale.
 */
async function createLock(lockPath: string): Promise<boolean> {
  const own = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(own, `${process.pid}\n`);
  try {
    await link(own, lockPath);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await rm(own, { force: true });
  }
}

const OWN_FILE = /^lock\.(\d+)\.[0-9a-f]+$/;

/** Removes the files of lock attempts whose process was killed before it could remove them. */
async function removeDeadOwnFiles(stateDir: string): Promise<void> {
  for (const name of await readdir(stateDir)) {
    const pid = OWN_FILE.exec(name)?.[1];
    if (pid !== undefined && !isAlive(Number(pid))) await rm(join(stateDir, name), { force: true });
  }
}

/** The pid written in the lock when that process no longer exists, else undefined. */
async function stalePidOf(lockPath: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(lockPath, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(text, 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  return isAlive(pid) ? undefined : pid;
}
