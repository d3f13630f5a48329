/**
 * Several files of the store replaced as one change, with a journal: a writer killed after its
 * commit point is completed by the next one to take the store lock (withStoreLock calls
 * finishStoreWrites), before that writer reads anything.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { syncDirectory, writeFileAtomic } from '../yaml/document.ts';
import { exists, storePaths } from './store.ts';

/** A file of the store written in the same transaction as the descriptor. */
export interface StoreFile {
  /** absolute path inside the store */
  path: string;
  content: string;
}

const TXN_DIR = 'txn';
const JOURNAL = 'journal.json';

/**
 * Replaces several files of the store as one change: each new content is written and fsynced
 * under `.state/txn/PID-RANDOM/`, then a journal naming them all is written (the commit
 * point), then each is renamed over its target and the journal removed. A writer killed before
 * the journal exists changed nothing; one killed after it is completed by the next writer
 * (finishStoreWrites, which withStoreLock runs before anything else holds the lock). One file
 * is simply written atomically. Call holding the store lock.
 */
export async function writeStoreFiles(storeDir: string, files: StoreFile[]): Promise<void> {
  if (files.length === 0) return;
  if (files.length === 1) {
    await writeFileAtomic(files[0]!.path, files[0]!.content);
    return;
  }
  const root = resolve(storeDir);
  const targets = files.map((f) => storeRelative(root, f.path));
  const dir = join(
    storePaths.stateDir(storeDir),
    TXN_DIR,
    `${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  await mkdir(dir, { recursive: true });
  try {
    for (const [i, f] of files.entries()) await writeFileSynced(join(dir, String(i)), f.content);
    await writeFileSynced(join(dir, `${JOURNAL}.tmp`), JSON.stringify({ targets }));
    await rename(join(dir, `${JOURNAL}.tmp`), join(dir, JOURNAL));
    await syncDirectory(dir);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  await applyJournal(root, dir, targets);
}

/**
 * Completes the transactions of writers that were killed after their commit point and drops
 * the others; returns how many were completed. Call holding the store lock.
 */
export async function finishStoreWrites(storeDir: string): Promise<number> {
  const parent = join(storePaths.stateDir(storeDir), TXN_DIR);
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return 0;
  }
  const root = resolve(storeDir);
  let completed = 0;
  for (const name of names) {
    const dir = join(parent, name);
    const journal = await readFile(join(dir, JOURNAL), 'utf8').catch(() => undefined);
    let targets: string[] | undefined;
    try {
      const parsed =
        journal === undefined ? undefined : (JSON.parse(journal) as { targets?: unknown });
      if (Array.isArray(parsed?.targets) && parsed.targets.every((t) => typeof t === 'string'))
        targets = (parsed.targets as string[]).map((t) => storeRelative(root, join(root, t)));
    } catch {
      targets = undefined; // a journal that does not parse was never committed
    }
    if (targets === undefined) await rm(dir, { recursive: true, force: true });
    else {
      await applyJournal(root, dir, targets);
      completed++;
    }
  }
  return completed;
}

async function applyJournal(root: string, dir: string, targets: string[]): Promise<void> {
  const dirs = new Set<string>();
  for (const [i, target] of targets.entries()) {
    const staged = join(dir, String(i));
    if (!(await exists(staged))) continue; // renamed before a kill
    await rename(staged, join(root, target));
    dirs.add(dirname(join(root, target)));
  }
  for (const d of dirs) await syncDirectory(d);
  await rm(dir, { recursive: true, force: true });
}

/** `path` relative to the store, refusing anything outside it or under .state. */
function storeRelative(root: string, path: string): string {
  const rel = relative(root, resolve(path));
  if (
    rel === '' ||
    rel.startsWith('..') ||
    rel.startsWith(`.state${sep}`) ||
    resolve(root, rel) !== resolve(path)
  )
    throw new Error(`writeStoreFiles: ${path} is not a file of the store`);
  return rel;
}

async function writeFileSynced(path: string, content: string): Promise<void> {
  const handle = await open(path, 'wx', 0o644);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
