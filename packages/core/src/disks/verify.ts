import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { hashFile, listBlobs, removeStaleTmpFiles } from './blobs.ts';
import { ramdiskBlobs } from './ramdisk.ts';
import { parseYaml, type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { withStoreLock } from '../store/lock.ts';
import {
  changedReleaseFiles,
  type ChannelsDoc,
  type ReleaseDoc,
  releasePaths,
} from '../store/releases.ts';
import { exists, listNames, mapLimit, storePaths } from '../store/store.ts';
import { validateDocument } from '../validate/document.ts';
import { validateStore } from '../validate/store.ts';

export interface StoreVerification {
  blobs: {
    checked: number;
    /** store-relative paths of blobs whose content does not hash to their name (or that are not blob names) */
    bad: string[];
  };
  /** disks declared `blob: true` whose blob is not in the store */
  missing: Array<{ image: string; disk: string; sha256: string }>;
  /** every problem of every file (as `image validate`) */
  problems: Problem[];
  releases: {
    checked: number;
    /** files of a release that differ from what its release.yaml recorded, or were added or removed */
    changed: Array<{ release: string; file: string }>;
    /** blobs a release's frozen image.yaml declares (`blob: true`) that the store lacks */
    missing: Array<{ release: string; disk: string; sha256: string }>;
  };
  /** with gc: store-relative paths removed */
  removed: string[];
  counts: { images: number; records: number; systems: number; releases: number };
}

export interface VerifyStoreOptions {
  /** remove blobs nothing refers to, and temporary files of writers that are gone */
  gc?: boolean;
  /** after each blob is rehashed */
  onProgress?: (done: number, total: number) => void;
}

const SHA256_ANYWHERE = /\b[0-9a-f]{64}\b/g;

/**
 * Checks the whole store: every blob rehashed (its name must be the sha256 of its content),
 * every file valid, no disk naming a blob the store lacks, every release's files as its
 * release.yaml recorded them. With `gc`, first removes (holding the store lock) the blobs no
 * image and no release names. A blob counts as named when its sha256 appears anywhere in an
 * image.yaml or a record — the store's or a release's frozen copy — or in a release.yaml or the
 * ramdisk's ramdisk.yaml, even one that does not parse, so a broken file never loses its disks.
 */
export async function verifyStore(
  storeDir: string,
  options: VerifyStoreOptions = {},
): Promise<StoreVerification> {
  const removed: string[] = [];
  if (options.gc) {
    // withStoreLock completes a writer killed mid-transaction first, so gc sees the blobs it named.
    await withStoreLock(storeDir, async () => {
      const named = new Set([
        ...(await references(storeDir)).named,
        ...(await releaseReferences(storeDir)),
        ...(await ramdiskBlobs(storeDir)),
      ]);
      for (const blob of await listBlobs(storeDir)) {
        if (blob.valid && named.has(blob.sha256)) continue;
        await rm(blob.path, { recursive: true, force: true });
        removed.push(relative(storeDir, blob.path));
      }
      removed.push(...(await removeStaleTmpFiles(storeDir)));
    });
  }

  const blobs = await listBlobs(storeDir);
  let done = 0;
  const bad = (
    await mapLimit(blobs, 2, async (blob) => {
      const ok = blob.valid && (await hashFile(blob.path).catch(() => '')) === blob.sha256;
      options.onProgress?.(++done, blobs.length);
      return ok ? undefined : relative(storeDir, blob.path);
    })
  ).filter((b) => b !== undefined);

  const { declared } = await references(storeDir);
  const missing: StoreVerification['missing'] = [];
  for (const ref of declared) {
    if (!(await exists(storePaths.blobFile(storeDir, ref.sha256)))) missing.push(ref);
  }

  const validation = await validateStore(storeDir);
  const releases = await verifyReleases(storeDir);
  return {
    blobs: { checked: blobs.length, bad },
    missing,
    releases: { checked: releases.checked, changed: releases.changed, missing: releases.missing },
    problems: [...validation.problems, ...releases.problems],
    removed,
    counts: { ...validation.counts, releases: releases.checked },
  };
}

/** The release directories of the store: releases/IMAGE/REV, as [image, revision]. */
async function releaseDirs(storeDir: string): Promise<Array<[string, number]>> {
  const dirs: Array<[string, number]> = [];
  for (const image of await listNames(join(storeDir, 'releases'), 'dirs'))
    for (const rev of await listNames(join(storeDir, 'releases', image), 'dirs'))
      if (/^[1-9][0-9]*$/.test(rev)) dirs.push([image, Number(rev)]);
  return dirs;
}

/** Every sha256 a release names: in its release.yaml and its frozen image.yaml and records. */
async function releaseReferences(storeDir: string): Promise<Set<string>> {
  const named = new Set<string>();
  for (const [image, revision] of await releaseDirs(storeDir)) {
    const dir = join(storeDir, 'releases', image, String(revision));
    const text = await readFile(join(dir, 'release.yaml'), 'utf8').catch(() => '');
    for (const match of text.matchAll(SHA256_ANYWHERE)) named.add(match[0]);
    for (const sha of (await references(dir)).named) named.add(sha);
  }
  return named;
}

interface ReleaseVerification {
  checked: number;
  changed: StoreVerification['releases']['changed'];
  missing: StoreVerification['releases']['missing'];
  problems: Problem[];
}

/**
 * Every release: its release.yaml valid and where it says it is, its files as recorded, the blobs
 * its frozen image.yaml declares present; every channels.yaml valid and pointing at releases
 * that exist and are not revoked.
 */
async function verifyReleases(storeDir: string): Promise<ReleaseVerification> {
  const result: ReleaseVerification = { checked: 0, changed: [], missing: [], problems: [] };
  const found = new Map<string, ReleaseDoc>();
  for (const [image, revision] of await releaseDirs(storeDir)) {
    const ref = `${image}@${revision}`;
    const release = await readReleaseDoc<ReleaseDoc>(
      storeDir,
      'Release',
      releasePaths.rel.releaseFile(image, revision),
      result.problems,
      (y, value) =>
        value.image === image && value.revision === revision
          ? []
          : [problemAt(y, [], `says it is ${value.image}@${value.revision}, but lies in ${ref}/`)],
    );
    if (!release) continue;
    result.checked++;
    found.set(ref, release);
    for (const file of await changedReleaseFiles(storeDir, release))
      result.changed.push({ release: ref, file });
    const { declared } = await references(join(storeDir, 'releases', image, String(revision)));
    for (const d of declared)
      if (!(await exists(storePaths.blobFile(storeDir, d.sha256))))
        result.missing.push({ release: ref, disk: d.disk, sha256: d.sha256 });
  }
  for (const image of await listNames(join(storeDir, 'releases'), 'dirs')) {
    const display = releasePaths.rel.channelsFile(image);
    if (!(await exists(join(storeDir, display)))) continue;
    await readReleaseDoc<ChannelsDoc>(storeDir, 'Channels', display, result.problems, (y, value) =>
      Object.entries(value.channels).flatMap(([channel, revision]) => {
        const release = found.get(`${image}@${revision}`);
        if (release?.revoked)
          return [
            problemAt(y, ['channels', channel], `points at ${image}@${revision}, which is revoked`),
          ];
        if (release) return [];
        return [
          problemAt(
            y,
            ['channels', channel],
            `points at ${image}@${revision}, which is not a valid release`,
          ),
        ];
      }),
    );
  }
  return result;
}

/**
 * Reads and validates one document under releases/, adding its problems (and those `check`
 * finds in a valid one) to `problems`; the value when it had none.
 */
async function readReleaseDoc<T>(
  storeDir: string,
  kind: 'Release' | 'Channels',
  display: string,
  problems: Problem[],
  check: (y: YamlFile, value: T) => Problem[],
): Promise<T | undefined> {
  const text = await readFile(join(storeDir, display), 'utf8').catch(() => undefined);
  if (text === undefined) {
    problems.push({ file: display, line: 1, col: 1, path: '', message: 'the file is missing' });
    return undefined;
  }
  const y = parseYaml(display, text);
  const found = validateDocument(kind, y);
  if (found.length === 0) found.push(...check(y, y.value as T));
  problems.push(...found);
  return found.length === 0 ? (y.value as T) : undefined;
}

/**
 * `declared`: disks with `blob: true` and a sha256, from every image.yaml that parses;
 * `named`: every sha256 written anywhere in an image.yaml or record (what gc keeps).
 */
async function references(storeDir: string): Promise<{
  declared: Array<{ image: string; disk: string; sha256: string }>;
  named: Set<string>;
}> {
  const declared: Array<{ image: string; disk: string; sha256: string }> = [];
  const named = new Set<string>();
  const imagesDir = storePaths.imagesDir(storeDir);
  for (const image of await listNames(imagesDir, 'dirs')) {
    const files = [
      'image.yaml',
      ...(await listNames(join(imagesDir, image, 'records'), 'yamlFiles')).map(
        (r) => `records/${r}.yaml`,
      ),
    ];
    for (const file of files) {
      const text = await readFile(join(imagesDir, image, file), 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      for (const match of text.matchAll(SHA256_ANYWHERE)) named.add(match[0]);
      if (file !== 'image.yaml') continue;
      const value = parseYaml(file, text).value as { disks?: unknown } | undefined;
      for (const disk of Array.isArray(value?.disks) ? value.disks : []) {
        const d = disk as { id?: unknown; sha256?: unknown; blob?: unknown };
        if (d.blob === true && typeof d.sha256 === 'string' && /^[0-9a-f]{64}$/.test(d.sha256))
          declared.push({ image, disk: String(d.id), sha256: d.sha256 });
      }
    }
  }
  return { declared, named };
}

function relative(storeDir: string, path: string): string {
  return path
    .slice(storeDir.length + 1)
    .split('\\')
    .join('/');
}
