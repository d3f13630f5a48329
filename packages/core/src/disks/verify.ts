import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { hashFile, listBlobs, removeStaleTmpFiles } from './blobs.ts';
import { parseYaml, type Problem } from '../yaml/document.ts';
import { withStoreLock } from '../store/lock.ts';
import { exists, listNames, mapLimit, storePaths } from '../store/store.ts';
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
  /** with gc: store-relative paths removed */
  removed: string[];
  counts: { images: number; records: number; systems: number };
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
 * every file valid, no disk naming a blob the store lacks. With `gc`, first removes (holding the
 * store lock) the blobs no image names. A blob counts as named when its sha256 appears anywhere
 * in an image.yaml or a record, even one that does not parse, so a broken file never loses its
 * disks.
 */
export async function verifyStore(
  storeDir: string,
  options: VerifyStoreOptions = {},
): Promise<StoreVerification> {
  const removed: string[] = [];
  if (options.gc) {
    // withStoreLock completes a writer killed mid-transaction first, so gc sees the blobs it named.
    await withStoreLock(storeDir, async () => {
      const { named } = await references(storeDir);
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
  return {
    blobs: { checked: blobs.length, bad },
    missing,
    problems: validation.problems,
    removed,
    counts: validation.counts,
  };
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
