import {
  Document,
  isCollection,
  isMap,
  isScalar,
  type Node,
  parseDocument,
  type Scalar,
  stringify,
} from 'yaml';
import type { PathSegment } from './document.ts';

/** Options that keep machine-written YAML stable: no line folding, two-space indent. */
const STRINGIFY = { lineWidth: 0, indent: 2, flowCollectionPadding: false } as const;

/** YAML text for a new document; key order is the order of `value`'s own keys. */
export function stringifyYaml(value: unknown): string {
  return stringify(value, STRINGIFY);
}

export interface YamlEdit {
  path: readonly PathSegment[];
  /** undefined removes the key */
  value: unknown;
  /** where a new key goes: after this sibling key (default: after the last one) */
  after?: string;
}

/**
 * Applies edits to YAML text a person wrote, changing as few lines as it can: a scalar that
 * already exists is replaced where it stands (keeping its quoting style); anything else goes
 * through the document model, which keeps comments and key order.
 */
export function editYamlText(text: string, edits: readonly YamlEdit[]): string {
  let current = text;
  for (const edit of edits) current = applyEdit(current, edit);
  return current;
}

function applyEdit(text: string, edit: YamlEdit): string {
  const doc = parseDocument(text, { keepSourceTokens: true });
  const node = doc.getIn(edit.path, true);
  if (edit.value !== undefined && isScalar(node) && isPlainScalarValue(edit.value) && node.range) {
    const replacement = renderScalar(edit.value, node);
    if (replacement !== undefined) {
      const [start, end] = node.range;
      // A block scalar's range takes in the line break that ends it; the next key needs it back.
      const lineBreak = /\r?\n$/.exec(text.slice(start, end))?.[0] ?? '';
      return text.slice(0, start) + replacement + lineBreak + text.slice(end);
    }
  }
  const inserted = edit.value === undefined ? undefined : insertNewKey(text, doc, edit);
  if (inserted !== undefined) return inserted;
  if (edit.value === undefined) {
    doc.deleteIn(edit.path);
  } else {
    openEmptyFlowCollections(doc, edit.path);
    doc.setIn(edit.path, doc.createNode(edit.value));
  }
  return doc.toString(STRINGIFY);
}

function isPlainScalarValue(value: unknown): boolean {
  return value === null || ['string', 'number', 'boolean'].includes(typeof value);
}

/** The scalar as it would be written in place of `like`, or undefined when it needs more than one line. */
function renderScalar(value: unknown, like: Scalar): string | undefined {
  const scalar = new Document().createNode(value) as Scalar;
  if (typeof value === 'string' && like.type && !like.type.startsWith('BLOCK'))
    scalar.type = like.type;
  const rendered = new Document(scalar).toString(STRINGIFY).replace(/\n$/, '');
  return rendered.includes('\n') ? undefined : rendered;
}

/**
 * `parameters: {}` written by a person means "none yet"; once something goes in, it reads better
 * as a block, so the empty flow collections on the way to an edit become block collections.
 */
function openEmptyFlowCollections(doc: Document, path: readonly PathSegment[]): void {
  for (let depth = 0; depth < path.length; depth++) {
    const node = depth === 0 ? doc.contents : doc.getIn(path.slice(0, depth), true);
    if (isCollection(node) && node.flow && node.items.length === 0) node.flow = false;
  }
}

/**
 * A key the document does not have yet, added as new lines after the last entry of the nearest
 * block mapping that exists, so no other line changes. Undefined when that is not possible
 * (flow or empty parents, list indices), and the document model takes over.
 */
function insertNewKey(text: string, doc: Document, edit: YamlEdit): string | undefined {
  const { path, value } = edit;
  let missing = 0;
  while (missing < path.length && doc.getIn(path.slice(0, missing + 1), true) !== undefined)
    missing++;
  if (missing === path.length) return undefined;
  const parent = missing === 0 ? doc.contents : doc.getIn(path.slice(0, missing), true);
  const rest = path.slice(missing);
  if (!isMap(parent) || parent.flow || parent.items.length === 0) return undefined;
  if (rest.some((segment) => typeof segment !== 'string')) return undefined;
  const nested = rest.reduceRight<unknown>((inner, key) => ({ [key]: inner }), value);
  const first = parent.items[0]!.key as Node;
  const last =
    parent.items.find((p) => isScalar(p.key) && p.key.value === edit.after) ?? parent.items.at(-1)!;
  const keyStart = first.range?.[0];
  const lastEnd = (last.value as Node | null)?.range?.[1] ?? (last.key as Node).range?.[1];
  if (keyStart === undefined || lastEnd === undefined) return undefined;
  const indent = ' '.repeat(keyStart - (text.lastIndexOf('\n', keyStart - 1) + 1));
  const block = stringifyYaml(nested)
    .trimEnd()
    .split('\n')
    .map((line) => (line === '' ? line : indent + line))
    .join('\n');
  const lineEnd = text.indexOf('\n', Math.max(lastEnd - 1, 0));
  if (lineEnd < 0) return `${text}\n${block}\n`;
  return `${text.slice(0, lineEnd + 1)}${block}\n${text.slice(lineEnd + 1)}`;
}
