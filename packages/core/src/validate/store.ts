/**
 * The whole store checked at once: every document, the files images name, and the references
 * between documents.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseYaml, type Problem, problemAt } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { isValidName } from '../util/names.ts';
import { checkTemplate } from '../template/template.ts';
import {
  checkLayerParameters,
  checkRecordDisks,
  checkSystemDuplicates,
  checkSystemReferences,
} from './cross.ts';
import { sortUniqueProblems, validateDocument } from './document.ts';
import { computedTemplateProblems } from './image.ts';
import {
  CONCURRENCY,
  createLimiter,
  type ImageEntry,
  isFile,
  type Limiter,
  listDir,
  readImage,
  readOptional,
  readSystems,
} from './read-store.ts';
import { isObject, list } from './values.ts';

export interface StoreValidation {
  problems: Problem[];
  counts: { images: number; records: number; systems: number };
}

/**
 * Validates the store at `storeDir` (every image, record and system, or only the named images
 * with their records and the systems that use them) and the references between documents.
 * An image named in `options.images` that does not exist is a NOT_FOUND error.
 */
export async function validateStore(
  storeDir: string,
  options: { images?: string[] } = {},
): Promise<StoreValidation> {
  const limit = createLimiter(CONCURRENCY);
  const problems: Problem[] = [];
  const missing = (file: string, message: string): Problem => ({
    file,
    line: 1,
    col: 1,
    path: '',
    message,
  });

  const [storeText, storeSets, imageDirs, systemFiles] = await Promise.all([
    limit(() => readOptional(join(storeDir, 'store.yaml'))),
    limit(() => listDir(join(storeDir, 'custom_scripts'))),
    limit(() => listDir(join(storeDir, 'images'))),
    limit(() => listDir(join(storeDir, 'systems'))),
  ]);
  if (storeText === undefined)
    problems.push(missing('store.yaml', 'missing store.yaml: this is not an image store'));
  else problems.push(...validateDocument('ImageStore', parseYaml('store.yaml', storeText)));
  const storeSetNames = new Set(storeSets.filter((d) => d.isDirectory()).map((d) => d.name));

  const allImages = imageDirs
    .filter((d) => d.isDirectory() && !d.name.startsWith('.'))
    .map((d) => d.name);
  let selected = allImages;
  if (options.images) {
    const present = new Set(allImages);
    for (const name of options.images) {
      if (!present.has(name)) {
        throw new ImgctlError('NOT_FOUND', `image '${name}' not found`, {
          hint: "'imgctl image list' shows the images",
        });
      }
    }
    selected = [...new Set(options.images)];
  }

  const images = await Promise.all(selected.map((name) => readImage(storeDir, name, limit)));
  const byName = new Map<string, ImageEntry>();
  let recordCount = 0;
  for (const image of images) {
    byName.set(image.name, image);
    const imageFile = `images/${image.name}/image.yaml`;
    if (!isValidName(image.name)) {
      problems.push(missing(`images/${image.name}`, `'${image.name}' is not a valid image name`));
      continue;
    }
    if (!image.yaml) {
      problems.push(missing(imageFile, `image directory images/${image.name} has no image.yaml`));
    } else {
      problems.push(...validateDocument('Image', image.yaml, { expectedName: image.name }));
    }
    for (const [recordName, record] of image.records) {
      recordCount++;
      problems.push(
        ...validateDocument('ImageRecord', record.yaml, {
          expectedName: recordName,
          expectedImage: image.name,
        }),
      );
      if (!record.doc) continue;
      if (!image.yaml) {
        problems.push(
          problemAt(
            record.yaml,
            ['image'],
            `record of a missing image: images/${image.name}/image.yaml does not exist`,
          ),
        );
        continue;
      }
      if (image.doc) {
        checkLayerParameters(
          record.yaml,
          ['provision', 'parameters'],
          record.doc,
          image,
          `record '${recordName}'`,
          problems,
        );
        checkRecordDisks(record.yaml, record.doc, image, problems);
      }
    }
  }
  await Promise.all(images.map((image) => checkImageFiles(image, storeSetNames, limit, problems)));

  const systems = await readSystems(storeDir, systemFiles, limit);
  const selectedSet = options.images ? new Set(selected) : undefined;
  const reported = selectedSet
    ? systems.filter((s) => typeof s.doc?.image === 'string' && selectedSet.has(s.doc.image))
    : systems;
  for (const system of reported) {
    problems.push(...validateDocument('System', system.yaml, { expectedName: system.name }));
    if (system.doc) checkSystemReferences(system, byName, problems);
  }
  checkSystemDuplicates(systems, new Set(reported), problems);

  return {
    problems: sortUniqueProblems(problems),
    counts: {
      images: images.filter((i) => i.yaml).length,
      records: recordCount,
      systems: reported.length,
    },
  };
}

/** The provisioning script, kickstart and custom script sets an image names exist. */
async function checkImageFiles(
  image: ImageEntry,
  storeSets: Set<string>,
  limit: Limiter,
  out: Problem[],
): Promise<void> {
  const doc = image.doc;
  const y = image.yaml;
  const provision = doc?.provision;
  if (!y || !isObject(provision)) return;
  for (const key of ['script', 'kickstart'] as const) {
    const file = provision[key];
    if (
      typeof file !== 'string' ||
      !/^[A-Za-z0-9._+/-]+$/.test(file) ||
      file.split('/').includes('..')
    )
      continue;
    if (!(await limit(() => isFile(join(image.dir, file))))) {
      out.push(problemAt(y, ['provision', key], `${file} does not exist in images/${image.name}/`));
    } else if (key === 'kickstart') {
      const source = await limit(() => readFile(join(image.dir, file), 'utf8'));
      for (const p of checkTemplate(source)) {
        out.push({
          file: `images/${image.name}/${file}`,
          line: p.line,
          col: p.col,
          path: '',
          message: p.message,
        });
      }
    }
  }
  out.push(...computedTemplateProblems(y));
  const sets = list(provision.custom_scripts);
  if (sets.length === 0) return;
  const own = new Set(
    (await limit(() => listDir(join(image.dir, 'custom_scripts'))))
      .filter((d) => d.isDirectory())
      .map((d) => d.name),
  );
  for (const [i, set] of sets.entries()) {
    if (typeof set === 'string' && !own.has(set) && !storeSets.has(set)) {
      out.push(
        problemAt(
          y,
          ['provision', 'custom_scripts', i],
          `custom script set '${set}' not found in images/${image.name}/custom_scripts/ or custom_scripts/`,
        ),
      );
    }
  }
}
