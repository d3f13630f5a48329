/** One document read for use: it exists and is valid, or the read fails with every problem. */
import { readFile } from 'node:fs/promises';
import { formatProblem, parseYaml, type YamlFile } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { type ValidateOptions, validateDocument } from './document.ts';
import type { DocKind } from './schemas.ts';

const NOT_FOUND_HINTS: Record<DocKind, string> = {
  ImageStore: "run 'imgctl init DIR', or pass --store DIR",
  Image: "'imgctl image list' shows the images",
  ImageRecord: "'imgctl record list IMAGE' shows the records of an image",
  System: "'imgctl system list' shows the systems",
  Plan: "'imgctl plan IMAGE' prints a plan",
  Release: "'imgctl image history IMAGE' lists the releases of an image",
  Channels: "'imgctl channel list IMAGE' lists the channels of an image",
  Ramdisk: "'imgctl ramdisk build' builds the provisioning ramdisk (docs/netboot.md)",
};

/**
 * Reads, parses and validates one document. Throws NOT_FOUND when the file does not exist and
 * VALIDATION, with every problem in `details`, when it is not valid.
 */
export async function loadDocument<T>(
  kind: DocKind,
  absPath: string,
  displayPath: string,
  options: ValidateOptions = {},
): Promise<{ value: T; yaml: YamlFile }> {
  let text: string;
  try {
    text = await readFile(absPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ImgctlError('NOT_FOUND', `${displayPath} does not exist`, {
        hint: NOT_FOUND_HINTS[kind],
        cause: error,
      });
    }
    throw error;
  }
  const yaml = parseYaml(displayPath, text);
  const problems = validateDocument(kind, yaml, options);
  if (problems.length > 0) {
    const count = `${problems.length} problem${problems.length === 1 ? '' : 's'}`;
    throw new ImgctlError('VALIDATION', `${displayPath} is not valid (${count})`, {
      details: problems.map(formatProblem),
      hint: 'fix each line above (file:line:col path: message); docs/formats.md describes every field',
    });
  }
  return { value: yaml.value as T, yaml };
}
