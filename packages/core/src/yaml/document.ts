import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { type Document, isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';

/** One problem in one file, reported as `file:line:col path: message`. */
export interface Problem {
  /** path relative to the store (or as given), forward slashes */
  file: string;
  line: number;
  col: number;
  /** dotted path inside the document, e.g. `devices.memory` or `disks[1].id`; '' for the root */
  path: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  return `${p.file}:${p.line}:${p.col} ${p.path === '' ? '(document)' : p.path}: ${p.message}`;
}

export type PathSegment = string | number;

export function formatPath(segments: readonly PathSegment[]): string {
  let out = '';
  for (const s of segments) out += typeof s === 'number' ? `[${s}]` : out === '' ? s : `.${s}`;
  return out;
}

/** A YAML file parsed with everything needed to point at a line and column. */
export interface YamlFile {
  file: string;
  text: string;
  doc: Document.Parsed;
  lineCounter: LineCounter;
  /** the plain JavaScript value; undefined when the YAML itself is broken */
  value: unknown;
  /** YAML syntax problems; when there are any, `value` is undefined */
  problems: Problem[];
}

export function parseYaml(file: string, text: string): YamlFile {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const problems: Problem[] = [...doc.errors].map((e) => {
    const pos = lineCounter.linePos(e.pos[0]);
    return { file, line: pos.line, col: pos.col, path: '', message: e.message.split('\n')[0]! };
  });
  const value = problems.length === 0 ? doc.toJS({ maxAliasCount: 100 }) : undefined;
  return { file, text, doc, lineCounter, value, problems };
}

/**
 * The line and column of the node at `segments`, or of the deepest node that exists on the way
 * there (so a missing key points at the mapping that lacks it). With `key`, points at the key of
 * the last segment instead of its value (for unknown keys).
 */
function locate(
  y: Pick<YamlFile, 'doc' | 'lineCounter'>,
  segments: readonly PathSegment[],
  options: { key?: boolean } = {},
): { line: number; col: number } {
  let node: unknown = y.doc.contents;
  let offset = rangeStart(node) ?? 0;
  for (const [i, segment] of segments.entries()) {
    const last = i === segments.length - 1;
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => isScalar(p.key) && String(p.key.value) === String(segment),
      );
      if (!pair) break;
      if (last && options.key) {
        offset = rangeStart(pair.key) ?? offset;
        break;
      }
      node = pair.value;
      offset = rangeStart(node) ?? rangeStart(pair.key) ?? offset;
    } else if (isSeq(node) && typeof segment === 'number') {
      node = node.items[segment];
      if (node === undefined) break;
      offset = rangeStart(node) ?? offset;
    } else {
      break;
    }
  }
  const pos = y.lineCounter.linePos(offset);
  return { line: pos.line, col: pos.col };
}

function rangeStart(node: unknown): number | undefined {
  return (node as Node | null | undefined)?.range?.[0];
}

export function problemAt(
  y: Pick<YamlFile, 'doc' | 'lineCounter' | 'file'>,
  segments: readonly PathSegment[],
  message: string,
  options: { key?: boolean } = {},
): Problem {
  const { line, col } = locate(y, segments, options);
  return { file: y.file, line, col, path: formatPath(segments), message };
}

/**
 * Writes a file so a reader sees the old content or the new, never a mix: a temp file in the
 * same directory, fsynced, renamed over the target, then the directory fsynced.
 */
export async function writeFileAtomic(
  path: string,
  content: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const tmp = join(
    dirname(path),
    `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  try {
    const handle = await open(tmp, 'wx', mode);
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await syncDirectory(dirname(path));
}

export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
