/**
 * Checks across documents: what a record or system sets against the image it names, and the
 * MACs and host names that must each belong to one system.
 */
import { join } from 'node:path';
import { type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { type ValidateOptions, sortUniqueProblems, validateDocument } from './document.ts';
import { typeMismatch } from './image.ts';
import {
  CONCURRENCY,
  createLimiter,
  type ImageEntry,
  listDir,
  readImage,
  readSystems,
  type SystemEntry,
} from './read-store.ts';
import { entries, isObject, list, type Obj, path, sizeOrUndefined } from './values.ts';

/**
 * Parameters a record or system sets: declared by the image, customizable, not computed, of the
 * right type.
 */
export function checkLayerParameters(
  y: YamlFile,
  at: string[],
  doc: Obj,
  image: ImageEntry,
  layer: string,
  out: Problem[],
): void {
  const declared = isObject(image.doc?.parameters) ? image.doc.parameters : {};
  for (const [name, value] of entries(path(doc, at))) {
    const parameter = declared[name];
    const segments = [...at, name];
    if (!isObject(parameter)) {
      out.push(
        problemAt(y, segments, `parameter '${name}' is not declared by image '${image.name}'`, {
          key: true,
        }),
      );
    } else if (parameter.customizable === false) {
      out.push(
        problemAt(y, segments, `parameter '${name}' is not customizable (set by ${layer})`, {
          key: true,
        }),
      );
    } else if (parameter.computed !== undefined) {
      out.push(
        problemAt(y, segments, `parameter '${name}' is computed by the image (set by ${layer})`, {
          key: true,
        }),
      );
    } else {
      const wrong = typeMismatch(parameter.type, value, parameter.secret === true);
      if (wrong) out.push(problemAt(y, segments, wrong));
    }
  }
}

/** The disks a record sizes exist in its image, and none is smaller than the image's. */
export function checkRecordDisks(y: YamlFile, doc: Obj, image: ImageEntry, out: Problem[]): void {
  const disks = new Map<string, Obj>();
  for (const disk of list(image.doc?.disks)) {
    if (isObject(disk) && typeof disk.id === 'string') disks.set(disk.id, disk);
  }
  for (const [id, setting] of entries(path(doc, ['provision', 'disks']))) {
    const disk = disks.get(id);
    if (!disk) {
      const known = [...disks.keys()].join(', ') || 'none';
      out.push(
        problemAt(
          y,
          ['provision', 'disks', id],
          `unknown disk '${id}' (image '${image.name}' has disks: ${known})`,
          {
            key: true,
          },
        ),
      );
      continue;
    }
    const size = isObject(setting) ? sizeOrUndefined(setting.size) : undefined;
    const imageSize = sizeOrUndefined(disk.size);
    if (size !== undefined && imageSize !== undefined && size < imageSize) {
      out.push(
        problemAt(
          y,
          ['provision', 'disks', id, 'size'],
          `size ${String((setting as Obj).size)} is smaller than the image's disk '${id}' (${String(disk.size)}); disks can grow, not shrink`,
        ),
      );
    }
  }
}

/** The image and record a system names exist, and the parameters it sets fit the image. */
export function checkSystemReferences(
  system: SystemEntry,
  images: Map<string, ImageEntry>,
  out: Problem[],
): void {
  const doc = system.doc!;
  if (typeof doc.image !== 'string') return;
  // A release or channel is checked when it is planned: the working image stands for it here.
  const name = doc.image.split('@')[0]!;
  const image = images.get(name);
  if (!image?.yaml) {
    out.push(problemAt(system.yaml, ['image'], `image '${name}' does not exist`));
    return;
  }
  if (typeof doc.record === 'string' && !image.records.has(doc.record)) {
    const known = [...image.records.keys()].join(', ') || 'none';
    out.push(
      problemAt(
        system.yaml,
        ['record'],
        `image '${name}' has no record '${doc.record}' (records: ${known})`,
      ),
    );
  }
  if (image.doc)
    checkLayerParameters(system.yaml, ['parameters'], doc, image, `system '${system.name}'`, out);
}

/** Systems are found by MAC and hostname, so each must name one system only. */
export function checkSystemDuplicates(
  systems: SystemEntry[],
  reported: Set<SystemEntry>,
  out: Problem[],
): void {
  const hostnames = new Map<string, SystemEntry>();
  const macs = new Map<string, SystemEntry>();
  for (const system of systems) {
    const doc = system.doc;
    if (!doc) continue;
    if (typeof doc.hostname === 'string') {
      const key = doc.hostname.toLowerCase();
      const first = hostnames.get(key);
      if (!first) hostnames.set(key, system);
      else if (reported.has(system)) {
        out.push(
          problemAt(
            system.yaml,
            ['hostname'],
            `hostname '${doc.hostname}' is also used by system '${first.name}'`,
          ),
        );
      }
    }
    for (const [i, nic] of list(doc.interfaces).entries()) {
      if (!isObject(nic) || typeof nic.mac !== 'string') continue;
      const key = nic.mac.toLowerCase();
      const first = macs.get(key);
      if (!first) macs.set(key, system);
      else if (first !== system && reported.has(system)) {
        out.push(
          problemAt(
            system.yaml,
            ['interfaces', i, 'mac'],
            `MAC ${key} is also used by system '${first.name}'`,
          ),
        );
      }
    }
  }
}

/**
 * A record or system about to be written, validated on its own and against the rest of the
 * store: its image exists, the record a system names exists, the parameters it sets are declared
 * and customizable, disks only grow, and (systems) no other system has its MAC or hostname.
 */
export async function checkOverlay(
  storeDir: string,
  kind: 'ImageRecord' | 'System',
  y: YamlFile,
  options: ValidateOptions = {},
): Promise<Problem[]> {
  const problems = validateDocument(kind, y, options);
  if (problems.length > 0 || !isObject(y.value)) return problems;
  const doc = y.value;
  const limit = createLimiter(CONCURRENCY);
  if (typeof doc.image !== 'string') return problems;
  // a system may follow a release or channel: the working image stands for it here
  const imageName = doc.image.split('@')[0]!;
  const image = await readImage(storeDir, imageName, limit);
  if (!image.yaml) {
    problems.push(problemAt(y, ['image'], `image '${imageName}' does not exist`));
  } else if (kind === 'ImageRecord') {
    checkLayerParameters(
      y,
      ['provision', 'parameters'],
      doc,
      image,
      `record '${String(doc.name)}'`,
      problems,
    );
    checkRecordDisks(y, doc, image, problems);
  } else {
    checkSystemReferences(
      { name: String(doc.name), yaml: y, doc },
      new Map([[imageName, image]]),
      problems,
    );
  }
  if (kind === 'System') {
    const files = (await limit(() => listDir(join(storeDir, 'systems')))).filter(
      (e) => e.name !== `${String(doc.name)}.yaml`,
    );
    const self: SystemEntry = { name: String(doc.name), yaml: y, doc };
    const others = await readSystems(storeDir, files, limit);
    checkSystemDuplicates([...others, self], new Set([self]), problems);
  }
  return sortUniqueProblems(problems);
}
