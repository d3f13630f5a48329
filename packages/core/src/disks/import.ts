import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { formatProblem, parseYaml, syncDirectory } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { withStoreLock } from '../store/lock.ts';
import { assertName, isValidName, printable } from '../util/names.ts';
import { isAlive } from '../util/pid.ts';
import {
  type ExtractOptions,
  extractArchive,
  imageExists,
  malformed,
  totalBytes,
} from './import-extract.ts';
import { type OciImportOptions, stageOciImage } from './import-oci.ts';
import { openSource } from './import-source.ts';
import type { Manifest } from './pack.ts';
import { exists, storePaths } from '../store/store.ts';
import type { ImageDoc } from '../store/types.ts';
import { validateDocument } from '../validate/document.ts';
import { editYamlText } from '../yaml/yaml-edit.ts';

export interface ImportOptions extends ExtractOptions, OciImportOptions {
  /** import under this name instead of the archive's */
  as?: string;
  /** replace an existing image of the same name */
  force?: boolean;
}

export interface ImportResult {
  image: string;
  /** the name inside the archive (differs with --as) */
  packedAs: string;
  revision: number;
  source: string;
  /** the manifest's digest, for an oci:// source */
  digest?: string;
  files: number;
  blobs: number;
  /** blobs the store already held (content-addressed, so not written again) */
  blobsReused: number;
  bytes: number;
  /** true when --force replaced an image of the same name */
  replaced: boolean;
}

const STAGE_PREFIX = 'import-';

/**
 * Imports an image into the store: an archive made by `packImage` (a file path, or an http(s)
 * URL streamed as it is read), or an image pushed to an OCI registry (`oci://…`, import-oci.ts).
 * The image is staged under `.state/` in bounded memory: an archive's members checked before a
 * byte of them is written (only regular files and directories the manifest lists, each with
 * exactly the size declared), a registry's manifest and config checked before a layer is
 * fetched. Every hash is verified and the descriptor validated before anything enters the
 * store; then, under the store lock, blobs are moved into `.blobs/` and the image directory is
 * renamed into `images/` in one step. Malformed or unsafe input is a VALIDATION error (exit 3),
 * a hash mismatch an INTEGRITY error (exit 7); either way the store is unchanged.
 */
export async function importArchive(
  storeDir: string,
  source: string,
  options: ImportOptions = {},
): Promise<ImportResult> {
  if (options.as !== undefined) assertName('image', options.as);
  await withStoreLock(storeDir, () => cleanStaleImports(storeDir));
  const stage = join(
    storePaths.stateDir(storeDir),
    `${STAGE_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  await mkdir(join(stage, 'image'), { recursive: true });
  await mkdir(join(stage, 'blobs'), { recursive: true });
  try {
    const staged = source.startsWith('oci://')
      ? await stageOciImage(storeDir, source, stage, options)
      : { manifest: await extractArchive(await openSource(source, options), stage, options) };
    const { manifest } = staged;
    const name = options.as ?? manifest.image;
    const revision = await prepareImage(join(stage, 'image'), manifest, name);
    return await withStoreLock(storeDir, async () => {
      const target = storePaths.imageDir(storeDir, name);
      const present = await exists(target);
      if (present && !options.force) throw imageExists(name);
      let reused = 0;
      for (const blob of manifest.blobs) {
        const dest = storePaths.blobFile(storeDir, blob.sha256);
        const staged = join(stage, 'blobs', blob.sha256);
        if (await exists(dest)) {
          reused++;
          continue;
        }
        if (!(await exists(staged)))
          throw new ImgctlError(
            'FAILED',
            `blob ${blob.sha256} left the store while the image was being imported`,
            { hint: 'run the import again (and not while imgctl verify --gc runs)' },
          );
        await mkdir(dirname(dest), { recursive: true });
        await chmod(staged, 0o444);
        await rename(staged, dest);
        await syncDirectory(dirname(dest));
        await syncDirectory(dirname(dirname(dest)));
      }
      await mkdir(storePaths.imagesDir(storeDir), { recursive: true });
      if (present) {
        // The old image goes into the stage, named, so a crash between the two renames is
        // undone by the next import (cleanStaleImports puts it back).
        await writeFile(join(stage, 'target'), name);
        await rename(target, join(stage, 'old'));
      }
      await rename(join(stage, 'image'), target);
      await syncDirectory(storePaths.imagesDir(storeDir));
      return {
        image: name,
        packedAs: manifest.image,
        revision,
        source,
        ...('digest' in staged ? { digest: staged.digest } : {}),
        files: manifest.files.length,
        blobs: manifest.blobs.length,
        blobsReused: reused,
        bytes: totalBytes(manifest),
        replaced: present,
      };
    });
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/**
 * Removes the staging directories of imports whose process is gone; an image an interrupted
 * `--force` import had moved aside is put back first. Call holding the store lock.
 */
async function cleanStaleImports(storeDir: string): Promise<string[]> {
  const stateDir = storePaths.stateDir(storeDir);
  let names: string[];
  try {
    names = await readdir(stateDir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of names) {
    const match = /^import-(\d+)-[0-9a-f]+$/.exec(entry);
    if (!match || isAlive(Number(match[1]))) continue;
    const dir = join(stateDir, entry);
    const old = join(dir, 'old');
    const target = await readFile(join(dir, 'target'), 'utf8').catch(() => undefined);
    if (target !== undefined && isValidName(target) && (await exists(old))) {
      const imageDir = storePaths.imageDir(storeDir, target);
      if (!(await exists(imageDir))) {
        await rename(old, imageDir);
        await syncDirectory(storePaths.imagesDir(storeDir));
      }
    }
    await rm(dir, { recursive: true, force: true });
    removed.push(entry);
  }
  return removed;
}

/**
 * Checks the staged image and, with another name, renames it: the descriptor's `name` and
 * every record's `image`. Returns the revision.
 */
async function prepareImage(dir: string, manifest: Manifest, name: string): Promise<number> {
  const imagePath = join(dir, 'image.yaml');
  let text = await readFile(imagePath, 'utf8');
  const initial = parseYaml('image.yaml', text).value as Partial<ImageDoc> | undefined;
  if (initial?.name !== manifest.image) {
    throw malformed(
      `the packed image.yaml names '${printable(String(initial?.name))}', the manifest '${manifest.image}'`,
    );
  }
  if (name !== manifest.image) {
    text = editYamlText(text, [{ path: ['name'], value: name }]);
    await writeFile(imagePath, text);
  }
  const display = `images/${name}/image.yaml`;
  const yaml = parseYaml(display, text);
  const problems = validateDocument('Image', yaml, { expectedName: name });
  const image = yaml.value as ImageDoc;
  const packed = new Set(manifest.blobs.map((b) => b.sha256));
  if (problems.length === 0) {
    for (const disk of image.disks) {
      if (disk.blob === true && disk.sha256 !== undefined && !packed.has(disk.sha256)) {
        throw malformed(
          `disk '${disk.id}' is stored in the store but its content is not in the archive`,
        );
      }
    }
    const used = new Set(image.disks.map((d) => d.sha256));
    for (const blob of packed) {
      if (!used.has(blob)) throw malformed(`blob ${blob} is in the archive but no disk uses it`);
    }
  }
  const recordsDir = join(dir, 'records');
  for (const file of manifest.files.map((f) => f.path)) {
    const match = /^records\/([^/]+)\.yaml$/.exec(file);
    if (!match) continue;
    const path = join(recordsDir, `${match[1]}.yaml`);
    let recordText = await readFile(path, 'utf8');
    if (name !== manifest.image) {
      recordText = editYamlText(recordText, [{ path: ['image'], value: name }]);
      await writeFile(path, recordText);
    }
    problems.push(
      ...validateDocument('ImageRecord', parseYaml(`images/${name}/${file}`, recordText), {
        expectedName: match[1],
        expectedImage: name,
      }),
    );
  }
  if (problems.length > 0) {
    throw new ImgctlError('VALIDATION', `refused the archive: the image it holds is not valid`, {
      details: problems.map(formatProblem),
      hint: 'fix the image where it was packed and pack it again; nothing was changed',
    });
  }
  return image.revision;
}
