import { readFile } from 'node:fs/promises';
import { parseAssignment } from './assign.ts';
import {
  formatProblem,
  type Problem,
  parseYaml,
  writeFileAtomic,
  type YamlFile,
} from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { withStoreLock } from './lock.ts';
import { type ValidateOptions, validateDocument } from '../validate/document.ts';
import type { DocKind } from '../validate/schemas.ts';
import { editYamlText } from '../yaml/yaml-edit.ts';

/** Keys that identify a document; changing them would move it, which only copy/add/remove do. */
const FIXED_KEYS = new Set(['apiVersion', 'kind', 'name', 'image']);

/** How to give a document another name (or image), which `set` cannot. */
const RENAME_HINTS: Partial<Record<DocKind, string>> = {
  Image:
    "copy the image to give it a new name (imgctl image copy); 'kind' and 'apiVersion' are fixed",
  ImageRecord:
    "add a record under the new name (imgctl record add) and remove this one; 'kind' and 'apiVersion' are fixed",
  System:
    "add a system under the new name (imgctl system add) and remove this one; 'kind' and 'apiVersion' are fixed",
};

export interface EditRequest {
  storeDir: string;
  kind: DocKind;
  absPath: string;
  display: string;
  assignments: string[];
  validate?: ValidateOptions;
  /** further checks on the edited document (e.g. against other files of the store) */
  check?: (edited: YamlFile) => Promise<Problem[]>;
  /** a changed document gets `revision` + 1, unless the assignments set it (images) */
  bumpRevision?: boolean;
}

export interface EditResult {
  file: string;
  changed: boolean;
  value: unknown;
}

/**
 * Applies PATH=VALUE assignments to a document in place, keeping the rest of the file as it
 * was written, and writes it only when the edited document is valid.
 */
export async function editDocument(request: EditRequest): Promise<EditResult> {
  const assignments = request.assignments.map(parseAssignment);
  if (assignments.length === 0)
    throw new ImgctlError('USAGE', 'nothing to set', { hint: 'give one or more PATH=VALUE' });
  for (const a of assignments) {
    const head = a.path[0];
    if (
      typeof head === 'string' &&
      FIXED_KEYS.has(head) &&
      !(request.kind === 'System' && head === 'image')
    ) {
      throw new ImgctlError('USAGE', `'${head}' cannot be set`, {
        hint: RENAME_HINTS[request.kind] ?? "'kind' and 'apiVersion' are fixed",
      });
    }
  }
  return withStoreLock(request.storeDir, async () => {
    const before = await readExisting(request.absPath, request.display);
    let after = editYamlText(
      before,
      assignments.map((a) => ({ path: a.path, value: a.value })),
    );
    if (
      request.bumpRevision &&
      after !== before &&
      !assignments.some((a) => a.path[0] === 'revision')
    ) {
      const { revision } = (parseYaml(request.display, before).value ?? {}) as {
        revision?: unknown;
      };
      if (Number.isInteger(revision))
        after = editYamlText(after, [{ path: ['revision'], value: (revision as number) + 1 }]);
    }
    const parsed = parseYaml(request.display, after);
    const problems = validateDocument(request.kind, parsed, request.validate);
    if (problems.length === 0 && request.check) problems.push(...(await request.check(parsed)));
    if (problems.length > 0) throw invalid(request.display, problems);
    if (after !== before) await writeFileAtomic(request.absPath, after);
    return { file: request.display, changed: after !== before, value: parsed.value };
  });
}

export function invalid(display: string, problems: Problem[]): ImgctlError {
  return new ImgctlError(
    'VALIDATION',
    `${display}: ${problems.length} problem${problems.length === 1 ? '' : 's'}; nothing was written`,
    {
      details: problems.map(formatProblem),
      hint: 'fix the values named above and run the command again',
    },
  );
}

async function readExisting(absPath: string, display: string): Promise<string> {
  try {
    return await readFile(absPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new ImgctlError('NOT_FOUND', `${display} does not exist`);
    throw error;
  }
}
