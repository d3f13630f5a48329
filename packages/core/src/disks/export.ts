import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { syncDirectory } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { loadImage } from '../store/images.ts';
import { ensureDir, storePaths } from '../store/store.ts';

export interface ExportResult {
  image: string;
  revision: number;
  dir: string;
  files: string[];
  /** disk files written, `<id>.<format>` */
  disks: Array<{ id: string; file: string; sha256: string; size: number }>;
  /** disks with no content to write, and why */
  skipped: Array<{ id: string; reason: string }>;
}

const ZEROES = Buffer.alloc(1024 * 1024);

/**
 * Copies `src` to a new file `dst`, skipping all-zero 1 MiB runs so holes stay holes, and
 * hashing on the way. With `expectedSha256`, a mismatch is an INTEGRITY error. Returns the
 * sha256 and size.
 */
async function copySparse(
  src: string,
  dst: string,
  options: { expectedSha256?: string; onBytes?: (n: number) => void } = {},
): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  const out = await open(dst, 'wx', 0o644);
  let position = 0;
  try {
    for await (const chunk of createReadStream(src, { highWaterMark: ZEROES.length })) {
      const data = chunk as Buffer;
      hash.update(data);
      if (!data.equals(ZEROES.subarray(0, data.length))) {
        await out.write(data, 0, data.length, position);
      }
      position += data.length;
      options.onBytes?.(data.length);
    }
    await out.truncate(position);
    await out.sync();
  } finally {
    await out.close();
  }
  const sha256 = hash.digest('hex');
  if (options.expectedSha256 !== undefined && sha256 !== options.expectedSha256) {
    throw new ImgctlError(
      'INTEGRITY',
      `${src} does not match its checksum: sha256 ${sha256}, expected ${options.expectedSha256}`,
      { hint: "the store's copy is damaged; 'imgctl verify' lists every damaged blob" },
    );
  }
  return { sha256, size: position };
}

/**
 * Writes image `name` as a plain directory usable without imgctl: image.yaml and the image's
 * other files, and each disk whose content is in the store as `<id>.<format>` (a sparse copy,
 * verified against its sha256). `dir` must be missing or empty; the directory is built next
 * to it and renamed into place, so it appears complete or not at all.
 */
export async function exportImage(
  storeDir: string,
  name: string,
  dir: string,
  options: { onProgress?: (done: number, total: number) => void } = {},
): Promise<ExportResult> {
  const image = await loadImage(storeDir, name);
  const target = resolve(dir);
  let entries: string[] = [];
  try {
    entries = await readdir(target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR')
      throw new ImgctlError('CONFLICT', `${target} exists and is not a directory`);
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  if (entries.length > 0) {
    throw new ImgctlError('CONFLICT', `${target} is not empty`, {
      hint: 'export into a new or empty directory',
    });
  }
  const sourceDir = storePaths.imageDir(storeDir, name);
  const files = (await readdir(sourceDir, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(sourceDir.length + 1))
    .sort();
  const disks: ExportResult['disks'] = [];
  const skipped: ExportResult['skipped'] = [];
  const planned: Array<{ id: string; file: string; sha256: string }> = [];
  for (const disk of image.disks) {
    if (disk.use === 'scratch')
      skipped.push({ id: disk.id, reason: 'scratch disks are created empty' });
    else if (disk.blob === true && disk.sha256 !== undefined)
      planned.push({ id: disk.id, file: `${disk.id}.${disk.format}`, sha256: disk.sha256 });
    else if (disk.url !== undefined)
      skipped.push({ id: disk.id, reason: `its content is not in the store (url: ${disk.url})` });
    else skipped.push({ id: disk.id, reason: 'it has no content yet' });
  }
  for (const p of planned) {
    if (files.includes(p.file))
      throw new ImgctlError('CONFLICT', `disk file ${p.file} would overwrite a file of the image`);
  }

  await ensureDir(dirname(target));
  const tmp = join(
    dirname(target),
    `.${basename(target)}.export-${randomBytes(4).toString('hex')}`,
  );
  await mkdir(tmp);
  try {
    for (const rel of files) {
      await mkdir(dirname(join(tmp, rel)), { recursive: true });
      await copyFile(join(sourceDir, rel), join(tmp, rel));
    }
    let total = 0;
    for (const p of planned) {
      try {
        total += (await stat(storePaths.blobFile(storeDir, p.sha256))).size;
      } catch {
        throw new ImgctlError(
          'NOT_FOUND',
          `disk '${p.id}' has no content in the store (${p.sha256})`,
          {
            hint: `add it with 'imgctl disk add ${name} --id ${p.id} …'`,
          },
        );
      }
    }
    let done = 0;
    for (const p of planned) {
      const copied = await copySparse(storePaths.blobFile(storeDir, p.sha256), join(tmp, p.file), {
        expectedSha256: p.sha256,
        onBytes: (n) => options.onProgress?.((done += n), total),
      });
      disks.push({ id: p.id, file: p.file, ...copied });
    }
    await chmod(tmp, 0o755);
    // rename(2) replaces an empty directory in one step.
    await rename(tmp, target);
    await syncDirectory(dirname(target));
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
  return { image: name, revision: image.revision, dir: target, files, disks, skipped };
}
