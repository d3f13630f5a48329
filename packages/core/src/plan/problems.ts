/** A plan's problems: where in which file each one is, and the one error that reports them all. */
import {
  formatProblem,
  type PathSegment,
  type Problem,
  problemAt,
  type YamlFile,
} from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';

/** A document as loaded, with the YAML its problems point into. */
export interface Loaded<T> {
  value: T;
  yaml: YamlFile;
}

export function locateIn(yaml: YamlFile, path: PathSegment[]): { line: number; col: number } {
  const p = problemAt(yaml, path, '');
  return { line: p.line, col: p.col };
}

/** An error about a value of a file; a template's own position becomes a note after the message. */
export function asProblem(yaml: YamlFile, path: PathSegment[], error: unknown): Problem {
  if (error instanceof ImgctlError) {
    const message = error.message.replace(
      /^template:(\d+):(\d+): (.*)$/s,
      '$3 (template line $1, column $2)',
    );
    return problemAt(yaml, path, message);
  }
  throw error;
}

function formatPlanProblem(p: Problem): string {
  return p.file === '--set' ? `--set ${p.path}: ${p.message}` : formatProblem(p);
}

/** One VALIDATION error for every problem of the plan; `--set` problems name the argument. */
export function planError(image: string, problems: Problem[]): ImgctlError {
  const lines = problems.map(formatPlanProblem);
  if (lines.length === 1) return new ImgctlError('VALIDATION', lines[0]!);
  return new ImgctlError('VALIDATION', `${lines.length} problems in the plan of image '${image}'`, {
    details: lines,
  });
}
