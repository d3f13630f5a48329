import { readFile, rm } from 'node:fs/promises';
import { parseAssignment } from './assign.ts';
import { parseYaml, writeFileAtomic } from '../yaml/document.ts';
import { type EditResult, editDocument, invalid } from './edit.ts';
import { ImgctlError } from '../util/errors.ts';
import { loadImage, systemsUsing } from './images.ts';
import { withStoreLock } from './lock.ts';
import { assertName } from '../util/names.ts';
import { ensureDir, exists, listNames, mapLimit, storePaths } from './store.ts';
import type { ImageRecordDoc } from './types.ts';
import { checkOverlay } from '../validate/cross.ts';
import { loadDocument } from '../validate/load.ts';
import { editYamlText, stringifyYaml } from '../yaml/yaml-edit.ts';

export interface RecordInput {
  description?: string;
  /** an existing record of the same image to start from */
  from?: string;
  vcpus?: number;
  memory?: string;
  /** ID=SIZE */
  diskSizes?: string[];
  /** NAME=VALUE parameter values */
  params?: string[];
}

export interface RecordRef {
  image: string;
  record: string;
  file: string;
}

/** Adds records/<record>.yaml to an image; validated against the image before it is written. */
export async function addRecord(
  storeDir: string,
  image: string,
  record: string,
  input: RecordInput = {},
): Promise<RecordRef> {
  assertName('image', image);
  assertName('record', record);
  const display = storePaths.rel.recordFile(image, record);
  await loadImage(storeDir, image);
  let text = input.from
    ? editYamlText(
        await readFile(storePaths.recordFile(storeDir, image, input.from), 'utf8').catch(() => {
          throw new ImgctlError(
            'NOT_FOUND',
            `record '${input.from}' of image '${image}' does not exist`,
          );
        }),
        [{ path: ['name'], value: record }],
      )
    : stringifyYaml({
        apiVersion: 'imgctl/v1',
        kind: 'ImageRecord',
        name: record,
        image,
        description: input.description ?? `Provision ${image} (${record}).`,
        provision: {},
      });
  const edits = [
    ...(input.from && input.description !== undefined
      ? [{ path: ['description'], value: input.description }]
      : []),
    ...(input.vcpus !== undefined ? [{ path: ['provision', 'vcpus'], value: input.vcpus }] : []),
    ...(input.memory !== undefined ? [{ path: ['provision', 'memory'], value: input.memory }] : []),
    ...(input.diskSizes ?? []).map((s) => {
      const a = parseAssignment(s);
      return { path: ['provision', 'disks', ...a.path, 'size'], value: a.value };
    }),
    ...(input.params ?? []).map((s) => {
      const a = parseAssignment(s);
      return { path: ['provision', 'parameters', ...a.path], value: a.value };
    }),
  ];
  text = editYamlText(text, edits);
  const file = storePaths.recordFile(storeDir, image, record);
  await withStoreLock(storeDir, async () => {
    if (await exists(file)) {
      throw new ImgctlError('CONFLICT', `record '${record}' of image '${image}' already exists`, {
        hint: `change it with 'imgctl record set ${image} ${record} PATH=VALUE'`,
      });
    }
    const problems = await checkOverlay(storeDir, 'ImageRecord', parseYaml(display, text), {
      expectedName: record,
      expectedImage: image,
    });
    if (problems.length > 0) throw invalid(display, problems);
    await ensureDir(storePaths.recordsDir(storeDir, image));
    await writeFileAtomic(file, text);
  });
  return { image, record, file: display };
}

export interface RecordSummary {
  name: string;
  description: string | null;
  vcpus: number | null;
  memory: string | number | null;
}

export async function listRecords(storeDir: string, image: string): Promise<RecordSummary[]> {
  await loadImage(storeDir, image);
  const names = await listNames(storePaths.recordsDir(storeDir, image), 'yamlFiles');
  return mapLimit(names, 32, async (name) => {
    const doc = await showRecord(storeDir, image, name);
    return {
      name,
      description: doc.description ?? null,
      vcpus: doc.provision?.vcpus ?? null,
      memory: doc.provision?.memory ?? null,
    };
  });
}

export async function showRecord(
  storeDir: string,
  image: string,
  record: string,
): Promise<ImageRecordDoc> {
  const { value } = await loadDocument<ImageRecordDoc>(
    'ImageRecord',
    storePaths.recordFile(storeDir, image, record),
    storePaths.rel.recordFile(image, record),
    { expectedName: record, expectedImage: image },
  );
  return value;
}

export async function setRecord(
  storeDir: string,
  image: string,
  record: string,
  assignments: string[],
): Promise<EditResult> {
  const display = storePaths.rel.recordFile(image, record);
  return editDocument({
    storeDir,
    kind: 'ImageRecord',
    absPath: storePaths.recordFile(storeDir, image, record),
    display,
    assignments,
    validate: { expectedName: record, expectedImage: image },
    check: (y) =>
      checkOverlay(storeDir, 'ImageRecord', y, { expectedName: record, expectedImage: image }),
  });
}

export async function removeRecord(
  storeDir: string,
  image: string,
  record: string,
  options: { force?: boolean } = {},
): Promise<RecordRef & { removed: boolean }> {
  const file = storePaths.recordFile(storeDir, image, record);
  return withStoreLock(storeDir, async () => {
    if (!(await exists(file)))
      throw new ImgctlError('NOT_FOUND', `record '${record}' of image '${image}' does not exist`);
    const usedBy = await systemsUsing(storeDir, image, record);
    if (usedBy.length > 0 && !options.force) {
      throw new ImgctlError(
        'CONFLICT',
        `record '${record}' is used by system(s): ${usedBy.join(', ')}`,
        {
          hint: 'point those systems at another record first, or pass --force',
        },
      );
    }
    await rm(file);
    return { image, record, file: storePaths.rel.recordFile(image, record), removed: true };
  });
}
