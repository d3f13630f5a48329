import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseYaml, syncDirectory, writeFileAtomic } from '../yaml/document.ts';
import { type EditResult, editDocument, invalid } from './edit.ts';
import { ImgctlError } from '../util/errors.ts';
import { withStoreLock } from './lock.ts';
import { assertName } from '../util/names.ts';
import { parseYamlValue } from '../yaml/quick-yaml.ts';
import * as scaffold from './scaffold.ts';
import { ensureDir, exists, listNames, listNamesSync, STORE_FILE, storePaths } from './store.ts';
import { listSystems } from './systems.ts';
import type { ImageDoc } from './types.ts';
import { validateDocument } from '../validate/document.ts';
import { computedTemplateProblems } from '../validate/image.ts';
import { loadDocument } from '../validate/load.ts';
import { editYamlText } from '../yaml/yaml-edit.ts';

export interface InitResult {
  storeDir: string;
  created: string[];
}

/** Creates an empty store in `dir` (which may exist, but must not hold a store already). */
export async function initStore(dir: string, options: { name?: string } = {}): Promise<InitResult> {
  const storeDir = resolve(dir);
  if (await exists(join(storeDir, STORE_FILE))) {
    throw new ImgctlError('CONFLICT', `${storeDir} already holds an image store`, {
      hint: 'pick another directory',
    });
  }
  // A store inside another would be packed, exported and found by commands run in it.
  for (let dir = dirname(storeDir); dir !== storeDir; dir = dirname(dir)) {
    if (await exists(join(dir, STORE_FILE)))
      throw new ImgctlError('CONFLICT', `${storeDir} is inside the image store ${dir}`, {
        hint: 'pick a directory outside it',
      });
    if (dirname(dir) === dir) break;
  }
  const name = assertName(
    'store',
    options.name ??
      (basename(storeDir)
        .toLowerCase()
        .replace(/[^a-z0-9._-]/g, '-') ||
        'store'),
  );
  const files: Array<[string, string]> = [
    ['.gitignore', scaffold.STORE_GITIGNORE],
    ['common/functions.sh', scaffold.FUNCTIONS_SH],
    ['common/defs.sh', scaffold.DEFS_SH],
    ['custom_scripts/.gitkeep', ''],
    ['images/.gitkeep', ''],
    ['systems/.gitkeep', ''],
  ];
  for (const d of ['common', 'custom_scripts', 'images', 'systems', '.state', '.blobs']) {
    await ensureDir(join(storeDir, d));
  }
  for (const [rel, content] of files) {
    if (!(await exists(join(storeDir, rel)))) await writeFile(join(storeDir, rel), content);
  }
  // store.yaml last: a store that has it is complete.
  await writeFileAtomic(join(storeDir, STORE_FILE), scaffold.storeYaml(name));
  return { storeDir, created: [STORE_FILE, ...files.map(([rel]) => rel)] };
}

export interface ImageSummary {
  name: string;
  label: string | null;
  revision: number | null;
  os: string | null;
  disks: number;
  records: string[];
  parent: string | null;
}

/**
 * Every image with the fields a listing shows. It reads descriptors without validating them
 * (`image validate` does that), so one broken file does not hide the rest.
 */
export async function listImages(storeDir: string): Promise<ImageSummary[]> {
  const imagesDir = storePaths.imagesDir(storeDir);
  // Synchronous reads on purpose: for thousands of tiny files, the thread pool's round trips
  // per file cost several times more than the reads themselves (bench/store-scale.ts).
  return listNamesSync(imagesDir, 'dirs').map((name) => {
    const records = listNamesSync(join(imagesDir, name, 'records'), 'yamlFiles');
    let doc: Partial<ImageDoc> = {};
    try {
      doc =
        (parseYamlValue(
          readFileSync(join(imagesDir, name, 'image.yaml'), 'utf8'),
        ) as Partial<ImageDoc> | null) ?? {};
    } catch {
      // a missing or broken descriptor is listed with what is known: its name
    }
    const os = doc.os
      ? [doc.os.distro ?? doc.os.family, doc.os.version].filter(Boolean).join(' ')
      : null;
    return {
      name,
      label: typeof doc.label === 'string' ? doc.label : null,
      revision: typeof doc.revision === 'number' ? doc.revision : null,
      os,
      disks: Array.isArray(doc.disks) ? doc.disks.length : 0,
      records,
      parent: typeof doc.parent === 'string' ? doc.parent : null,
    };
  });
}

export async function loadImage(storeDir: string, name: string): Promise<ImageDoc> {
  const { value } = await loadDocument<ImageDoc>(
    'Image',
    storePaths.imageFile(storeDir, name),
    storePaths.rel.imageFile(name),
    {
      expectedName: name,
    },
  );
  return value;
}

export interface ImageDetails {
  image: ImageDoc;
  records: string[];
  files: string[];
  systems: string[];
}

export async function showImage(storeDir: string, name: string): Promise<ImageDetails> {
  const image = await loadImage(storeDir, name);
  const dir = storePaths.imageDir(storeDir, name);
  const [records, files, systems] = await Promise.all([
    listNames(storePaths.recordsDir(storeDir, name), 'yamlFiles'),
    listFiles(dir),
    systemsUsing(storeDir, name),
  ]);
  return { image, records, files, systems };
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

/** Names of systems whose `image:` is `image` or one of its releases (and `record:`, when given); broken files are skipped. */
export async function systemsUsing(
  storeDir: string,
  image: string,
  record?: string,
): Promise<string[]> {
  const systems = await listSystems(storeDir);
  return systems
    .filter(
      (s) =>
        s.image?.split('@')[0] === image &&
        (record === undefined || (s.record ?? 'default') === record),
    )
    .map((s) => s.name);
}

export interface CreateResult {
  image: string;
  files: string[];
}

/** Scaffolds a new image directory; it appears whole or not at all. */
export async function createImage(storeDir: string, name: string): Promise<CreateResult> {
  assertName('image', name);
  const files: Array<[string, string, number?]> = [
    ['image.yaml', scaffold.imageYaml(name)],
    ['description.md', scaffold.descriptionMd(name)],
    ['provision.sh', scaffold.PROVISION_SH, 0o755],
    ['kickstart.ks', scaffold.KICKSTART_KS],
    ['records/default.yaml', scaffold.recordYaml(name, 'default')],
  ];
  return withStoreLock(storeDir, async () => {
    await refuseExisting(storeDir, name);
    await placeDirectory(storeDir, name, async (tmp) => {
      await mkdir(join(tmp, 'records'), { recursive: true });
      await mkdir(join(tmp, 'custom_scripts'), { recursive: true });
      for (const [rel, content, mode] of files)
        await writeFile(join(tmp, rel), content, { mode: mode ?? 0o644 });
    });
    return { image: name, files: files.map(([rel]) => rel) };
  });
}

async function refuseExisting(storeDir: string, name: string): Promise<void> {
  if (await exists(storePaths.imageDir(storeDir, name))) {
    throw new ImgctlError('CONFLICT', `image '${name}' already exists`, {
      hint: `pick another name, or edit it with 'imgctl image set ${name} PATH=VALUE'`,
    });
  }
  // A new image of a removed one's name would take over its releases and channels.
  if (await exists(join(storeDir, 'releases', name))) {
    throw new ImgctlError('CONFLICT', `image '${name}' was removed but its releases remain`, {
      hint: `pick another name; 'imgctl image history ${name}' lists them (releases/${name}/)`,
    });
  }
}

/**
 * Builds an image directory under .state/ and renames it into images/ in one step, so a crash
 * leaves either the whole image or nothing in images/.
 */
async function placeDirectory(
  storeDir: string,
  name: string,
  fill: (tmp: string) => Promise<void>,
): Promise<void> {
  const tmp = join(storeDir, '.state', `new-image-${name}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
    await mkdir(storePaths.imagesDir(storeDir), { recursive: true });
    await rename(tmp, storePaths.imageDir(storeDir, name));
    await syncDirectory(storePaths.imagesDir(storeDir));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

export interface CopyResult {
  image: string;
  parent: string;
  files: string[];
}

/**
 * "Create like": the same files under a new name, revision 1, `parent` naming the source and
 * its revision. Disk contents are shared (they live in .blobs by hash), not copied.
 */
export async function copyImage(
  storeDir: string,
  source: string,
  target: string,
): Promise<CopyResult> {
  assertName('image', target);
  const sourceImage = await loadImage(storeDir, source);
  return withStoreLock(storeDir, async () => {
    await refuseExisting(storeDir, target);
    let files: string[] = [];
    await placeDirectory(storeDir, target, async (tmp) => {
      await cp(storePaths.imageDir(storeDir, source), tmp, {
        recursive: true,
        verbatimSymlinks: true,
        errorOnExist: false,
      });
      const imageText = await readFile(join(tmp, 'image.yaml'), 'utf8');
      const parent = `${source}@${sourceImage.revision}`;
      const edited = editYamlText(imageText, [
        { path: ['name'], value: target },
        { path: ['revision'], value: 1 },
        { path: ['parent'], value: parent, after: 'revision' },
      ]);
      const problems = validateDocument(
        'Image',
        parseYaml(storePaths.rel.imageFile(target), edited),
        { expectedName: target },
      );
      if (problems.length > 0) throw invalid(storePaths.rel.imageFile(target), problems);
      await writeFile(join(tmp, 'image.yaml'), edited);
      for (const record of await listNames(join(tmp, 'records'), 'yamlFiles')) {
        const path = join(tmp, 'records', `${record}.yaml`);
        await writeFile(
          path,
          editYamlText(await readFile(path, 'utf8'), [{ path: ['image'], value: target }]),
        );
      }
      files = await listFiles(tmp);
    });
    return { image: target, parent: `${source}@${sourceImage.revision}`, files };
  });
}

export async function setImage(
  storeDir: string,
  name: string,
  assignments: string[],
): Promise<EditResult> {
  return editDocument({
    storeDir,
    kind: 'Image',
    absPath: storePaths.imageFile(storeDir, name),
    display: storePaths.rel.imageFile(name),
    assignments,
    validate: { expectedName: name },
    check: async (y) => computedTemplateProblems(y),
    bumpRevision: true,
  });
}

export interface RemoveResult {
  image: string;
  removed: boolean;
  usedBy: string[];
}

/** Removes an image directory; refused while a system runs it, unless forced. */
export async function removeImage(
  storeDir: string,
  name: string,
  options: { force?: boolean } = {},
): Promise<RemoveResult> {
  const dir = storePaths.imageDir(storeDir, name);
  return withStoreLock(storeDir, async () => {
    if (!(await exists(dir)))
      throw new ImgctlError('NOT_FOUND', `image '${name}' does not exist`, {
        hint: "see 'imgctl image list'",
      });
    const usedBy = await systemsUsing(storeDir, name);
    if (usedBy.length > 0 && !options.force) {
      throw new ImgctlError(
        'CONFLICT',
        `image '${name}' is used by ${usedBy.length} system(s): ${usedBy.join(', ')}`,
        {
          hint: 'point those systems at another image first, or pass --force',
        },
      );
    }
    // Rename out of images/ first so the image disappears in one step, then delete at leisure.
    const trash = join(storeDir, '.state', `removed-${name}-${randomBytes(4).toString('hex')}`);
    await mkdir(join(storeDir, '.state'), { recursive: true });
    await rename(dir, trash);
    await syncDirectory(storePaths.imagesDir(storeDir));
    await rm(trash, { recursive: true, force: true });
    return { image: name, removed: true, usedBy };
  });
}
