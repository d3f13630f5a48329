/** One document checked on its own: its YAML syntax, its schema and the rules of its kind. */
import { CST, LineCounter, Parser } from 'yaml';
import { type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { checkImage } from './image.ts';
import { checkPlan } from './plan.ts';
import { checkRecord } from './record.ts';
import { type DocKind, schemaProblems } from './schemas.ts';
import { checkInterfaces } from './system.ts';
import { isObject, type Obj } from './values.ts';

export interface ValidateOptions {
  /** the name the file's location gives it: image directory, record or system file name */
  expectedName?: string;
  /** for records: the image directory the record is stored under */
  expectedImage?: string;
}

/**
 * Every problem of one document: YAML syntax first (nothing else is checked then), else the
 * schema of `kind` and the rules a schema cannot express (duplicate ids, references between
 * fields, the name matching the file). Problems carry the line and column of the offending node.
 */
export function validateDocument(
  kind: DocKind,
  y: YamlFile,
  options: ValidateOptions = {},
): Problem[] {
  if (y.problems.length > 0) return locateSyntaxProblems(y);
  if (y.value === null || y.value === undefined) {
    return [
      {
        file: y.file,
        line: 1,
        col: 1,
        path: '',
        message: `the document is empty (expected kind: ${kind})`,
      },
    ];
  }
  const problems = schemaProblems(kind, y);
  if (isObject(y.value)) problems.push(...semanticProblems(kind, y, y.value, options));
  return sortUniqueProblems(problems);
}

/**
 * The YAML parser notices an unclosed quote or flow collection only where the file ends or the
 * indentation breaks; a person needs to see where it was opened, so point there.
 */
function locateSyntaxProblems(y: YamlFile): Problem[] {
  const opened: { line: number; col: number }[] = [];
  const lineCounter = new LineCounter();
  for (const token of new Parser(lineCounter.addNewLine).parse(y.text)) {
    if (token.type !== 'document') continue;
    CST.visit(token, (item) => {
      for (const node of [item.key, item.value]) {
        if (!node) continue;
        const unclosed =
          node.type === 'double-quoted-scalar' || node.type === 'single-quoted-scalar'
            ? node.source.length < 2 || node.source.at(-1) !== node.source[0]
            : node.type === 'flow-collection' &&
              !node.end.some((e) => e.source === ']' || e.source === '}');
        if (unclosed) opened.push(lineCounter.linePos(node.offset));
      }
    });
  }
  if (opened.length === 0) return y.problems;
  return y.problems.map((problem) => {
    if (!/missing closing|flow (sequence|mapping|collection)/i.test(problem.message))
      return problem;
    const before = opened.filter(
      (o) => o.line < problem.line || (o.line === problem.line && o.col <= problem.col),
    );
    const start = before.at(-1);
    return start ? { ...problem, line: start.line, col: start.col } : problem;
  });
}

function semanticProblems(
  kind: DocKind,
  y: YamlFile,
  doc: Obj,
  options: ValidateOptions,
): Problem[] {
  const out: Problem[] = [];
  if (
    options.expectedName !== undefined &&
    typeof doc.name === 'string' &&
    doc.name !== options.expectedName
  ) {
    const where =
      kind === 'Image'
        ? `its directory images/${options.expectedName}`
        : `its file name ${options.expectedName}.yaml`;
    out.push(problemAt(y, ['name'], `name '${doc.name}' does not match ${where}`));
  }
  switch (kind) {
    case 'Image':
      checkImage(y, doc, out);
      break;
    case 'ImageRecord':
      checkRecord(y, doc, options.expectedImage, out);
      break;
    case 'System':
      checkInterfaces(y, doc, out);
      break;
    case 'Plan':
      checkPlan(y, doc, out);
      break;
    case 'ImageStore':
      break;
  }
  return out;
}

/** `problems` without repeats (two checks may find the same one), in file, line, column order. */
export function sortUniqueProblems(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems
    .filter((p) => {
      const key = `${p.file}\0${p.line}\0${p.col}\0${p.path}\0${p.message}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .sort(
      (a, b) =>
        (a.file < b.file ? -1 : a.file > b.file ? 1 : 0) ||
        a.line - b.line ||
        a.col - b.col ||
        (a.message < b.message ? -1 : 1),
    );
}
