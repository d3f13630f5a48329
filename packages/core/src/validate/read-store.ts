/**
 * Reading a store's images, records and systems for checking: files that are absent read as
 * empty, and every read goes through a limiter so a store of thousands of files opens a bounded
 * number at once.
 */
import type { Dirent } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { YamlFile } from '../yaml/document.ts';
import { isValidName } from '../util/names.ts';
import { readYamlQuickly } from '../yaml/quick-yaml.ts';
import { isObject, type Obj } from './values.ts';

export interface ImageEntry {
  name: string;
  dir: string;
  yaml?: YamlFile;
  doc?: Obj;
  records: Map<string, { yaml: YamlFile; doc?: Obj }>;
}

export interface SystemEntry {
  name: string;
  yaml: YamlFile;
  doc?: Obj;
}

/** How many files one validation reads at once. */
export const CONCURRENCY = 64;

/** An image directory: its image.yaml and records (in file-name order); what it lacks is absent. */
export async function readImage(
  storeDir: string,
  name: string,
  limit: Limiter,
): Promise<ImageEntry> {
  const dir = join(storeDir, 'images', name);
  const image: ImageEntry = { name, dir, records: new Map() };
  if (!isValidName(name)) return image;
  const entries = await limit(() => listDir(dir));
  const jobs: Promise<void>[] = [];
  if (entries.some((e) => e.name === 'image.yaml' && !e.isDirectory())) {
    jobs.push(
      limit(() => readOptional(join(dir, 'image.yaml'))).then((text) => {
        if (text === undefined) return; // removed while we read
        image.yaml = readYamlQuickly(`images/${name}/image.yaml`, text);
        if (isObject(image.yaml.value)) image.doc = image.yaml.value;
      }),
    );
  }
  if (entries.some((e) => e.name === 'records' && e.isDirectory())) {
    const files = (await limit(() => listDir(join(dir, 'records'))))
      .filter((e) => e.name.endsWith('.yaml') && !e.name.startsWith('.') && !e.isDirectory())
      .map((e) => e.name)
      .sort();
    for (const file of files) {
      jobs.push(
        limit(() => readFile(join(dir, 'records', file), 'utf8')).then((text) => {
          const yaml = readYamlQuickly(`images/${name}/records/${file}`, text);
          image.records.set(file.slice(0, -'.yaml'.length), {
            yaml,
            doc: isObject(yaml.value) ? yaml.value : undefined,
          });
        }),
      );
    }
  }
  await Promise.all(jobs);
  // keep records in file-name order whatever order the reads finished in
  image.records = new Map([...image.records].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return image;
}

/** The systems among `files` of the store's systems/ directory, in file-name order. */
export async function readSystems(
  storeDir: string,
  files: Dirent[],
  limit: Limiter,
): Promise<SystemEntry[]> {
  const names = files
    .filter((e) => e.name.endsWith('.yaml') && !e.name.startsWith('.') && !e.isDirectory())
    .map((e) => e.name)
    .sort();
  return Promise.all(
    names.map(async (file) => {
      const text = await limit(() => readFile(join(storeDir, 'systems', file), 'utf8'));
      const yaml = readYamlQuickly(`systems/${file}`, text);
      return {
        name: file.slice(0, -'.yaml'.length),
        yaml,
        doc: isObject(yaml.value) ? yaml.value : undefined,
      };
    }),
  );
}

/** The text of `file`, or undefined when it does not exist. */
export async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The entries of `dir`; none when it does not exist or is not a directory. */
export async function listDir(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw error;
  }
}

/** Whether `file` exists and is a regular file. */
export async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

export type Limiter = <T>(task: () => Promise<T>) => Promise<T>;

/** Runs at most `max` tasks at once; only leaf I/O goes through it, so it cannot deadlock. */
export function createLimiter(max: number): Limiter {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    // a finishing task hands its slot straight to the next waiting one
    if (running >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    else running++;
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}
