import { parse } from 'yaml';
import { parseYaml, type YamlFile } from './document.ts';

type Obj = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// a quick reader for the plain YAML most store files are written in

/**
 * Parses `text` like `parseYaml` does, faster: files in the plain block style that imgctl writes
 * are read by `quickParse`, and the full YAML parser (which tracks every position) only runs when
 * a problem has to be located. Anything `quickParse` is not sure about goes to the full parser.
 */
export function readYamlQuickly(file: string, text: string): YamlFile {
  const value = quickParse(text);
  if (value === undefined) return parseYaml(file, text);
  let full: YamlFile | undefined;
  const parsed = () => {
    full ??= parseYaml(file, text);
    return full;
  };
  return {
    file,
    text,
    value,
    problems: [],
    get doc() {
      return parsed().doc;
    },
    get lineCounter() {
      return parsed().lineCounter;
    },
  };
}

class Unsure extends Error {}

interface Line {
  indent: number;
  content: string;
  /** index in the raw lines, for block scalars (which keep blank and comment lines) */
  n: number;
}

/** One instance: building an Error (and its stack) for every bail-out would cost more than parsing. */
const UNSURE = new Unsure();

const PLAIN_KEY = /^[A-Za-z0-9_][A-Za-z0-9_./-]*$/;
// a plain scalar starts with none of YAML's indicators; inside, `: ` and ` #` are ruled out below
const PLAIN_TEXT = /^[A-Za-z0-9_./=+~$(-]\P{Cc}*$/u;

/**
 * The value of a document in a subset of YAML (block mappings and sequences, plain and simple
 * quoted scalars, one-level flow collections of plain scalars, comments) with the YAML 1.2 core
 * schema `yaml` uses; undefined for anything else, so the caller falls back to the full parser.
 */
export function quickParse(text: string): unknown {
  const lines: Line[] = [];
  const raws = text.split('\n');
  for (const [n, raw] of raws.entries()) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const content = line.trimStart();
    if (content === '' || content.startsWith('#')) continue;
    const indent = line.length - content.length;
    if (
      line.slice(0, indent).includes('\t') ||
      content.startsWith('---') ||
      content.startsWith('...')
    )
      return undefined;
    lines.push({ indent, content: content.trimEnd(), n });
  }
  if (lines.length === 0 || lines[0]!.indent !== 0) return undefined;
  try {
    const at = { i: 0 };
    const value = quickBlock(lines, at, 0, raws);
    return at.i === lines.length && isObject(value) ? value : undefined;
  } catch (error) {
    if (error instanceof Unsure) return undefined;
    throw error;
  }
}

function quickBlock(lines: Line[], at: { i: number }, indent: number, raws: string[]): unknown {
  const first = lines[at.i]!;
  if (first.content === '-' || first.content.startsWith('- '))
    return quickSequence(lines, at, indent, raws);
  return quickMapping(lines, at, indent, raws);
}

function quickMapping(lines: Line[], at: { i: number }, indent: number, raws: string[]): Obj {
  const out: Obj = {};
  while (at.i < lines.length && lines[at.i]!.indent === indent) {
    const { content } = lines[at.i]!;
    if (content.startsWith('-')) break;
    const colon = content.indexOf(':');
    if (colon <= 0) throw UNSURE;
    const key = content.slice(0, colon);
    const rest = content.slice(colon + 1);
    if (
      !PLAIN_KEY.test(key) ||
      typeof quickPlain(key) !== 'string' ||
      Object.hasOwn(out, key) ||
      key === '__proto__'
    )
      throw UNSURE;
    if (rest !== '' && !rest.startsWith(' ')) throw UNSURE;
    at.i++;
    const inline = stripComment(rest.trim());
    if (inline === '|' || inline === '|-') {
      out[key] = quickLiteral(lines, at, indent, raws, inline === '|');
      continue;
    }
    if (inline !== '') {
      out[key] = quickScalar(inline);
      if (at.i < lines.length && lines[at.i]!.indent > indent) throw UNSURE;
      continue;
    }
    const next = lines[at.i];
    if (next && next.indent > indent) out[key] = quickBlock(lines, at, next.indent, raws);
    else if (
      next &&
      next.indent === indent &&
      (next.content === '-' || next.content.startsWith('- '))
    ) {
      out[key] = quickSequence(lines, at, indent, raws);
    } else out[key] = null;
  }
  if (at.i < lines.length && lines[at.i]!.indent > indent) throw UNSURE;
  return out;
}

function quickSequence(
  lines: Line[],
  at: { i: number },
  indent: number,
  raws: string[],
): unknown[] {
  const out: unknown[] = [];
  while (at.i < lines.length && lines[at.i]!.indent === indent) {
    const line = lines[at.i]!;
    if (line.content !== '-' && !line.content.startsWith('- ')) break;
    const item = line.content.slice(1).trimStart();
    if (item === '') {
      at.i++;
      const next = lines[at.i];
      out.push(next && next.indent > indent ? quickBlock(lines, at, next.indent, raws) : null);
    } else if (item.startsWith('-')) {
      throw UNSURE;
    } else if (/^[A-Za-z0-9_][A-Za-z0-9_./-]*:( |$)/.test(item)) {
      // `- key: value` starts a mapping whose keys line up with `key`
      const column = indent + (line.content.length - item.length);
      lines[at.i] = { indent: column, content: item, n: line.n };
      out.push(quickMapping(lines, at, column, raws));
    } else {
      at.i++;
      out.push(quickScalar(stripComment(item)));
      if (at.i < lines.length && lines[at.i]!.indent > indent) throw UNSURE;
    }
  }
  return out;
}

/** A literal block scalar (`|` keeps one final newline, `|-` none) under a key at `indent`. */
function quickLiteral(
  lines: Line[],
  at: { i: number },
  indent: number,
  raws: string[],
  clip: boolean,
): string {
  const start = lines[at.i - 1]!.n + 1;
  let end = start;
  while (end < raws.length) {
    const raw = raws[end]!.endsWith('\r') ? raws[end]!.slice(0, -1) : raws[end]!;
    const content = raw.trimStart();
    if (content !== '' && raw.length - content.length <= indent) break;
    end++;
  }
  const body = raws.slice(start, end).map((r) => (r.endsWith('\r') ? r.slice(0, -1) : r));
  while (body.length > 0 && body.at(-1)!.trim() === '') body.pop();
  if (body.length === 0) throw UNSURE;
  const blockIndent = body[0]!.length - body[0]!.trimStart().length;
  const text = body.map((line) => {
    if (line.trim() === '') {
      if (line.length > blockIndent) throw UNSURE;
      return '';
    }
    if (
      line.length - line.trimStart().length < blockIndent ||
      line.slice(0, blockIndent).includes('\t')
    )
      throw UNSURE;
    return line.slice(blockIndent);
  });
  while (at.i < lines.length && lines[at.i]!.n < end) at.i++;
  return text.join('\n') + (clip ? '\n' : '');
}

function stripComment(text: string): string {
  if (text.startsWith('"') || text.startsWith("'")) {
    const end = text.indexOf(text[0]!, 1);
    if (end < 0) throw UNSURE;
    const after = text.slice(end + 1).trim();
    if (after !== '' && !after.startsWith('#')) throw UNSURE;
    return text.slice(0, end + 1);
  }
  const hash = text.indexOf(' #');
  return (hash < 0 ? text : text.slice(0, hash)).trimEnd();
}

function quickScalar(text: string): unknown {
  const quote = text[0];
  if (quote === '"' || quote === "'") {
    const body = text.slice(1, -1);
    if (text.length < 2 || text.at(-1) !== quote || body.includes(quote) || body.includes('\\'))
      throw UNSURE;
    return body;
  }
  if (text.startsWith('[') && text.endsWith(']'))
    return quickFlow(text.slice(1, -1)).map(quickPlain);
  if (text === '{}') return {};
  if (text.startsWith('{') && text.endsWith('}')) {
    const out: Obj = {};
    for (const pair of quickFlow(text.slice(1, -1))) {
      const colon = pair.indexOf(': ');
      const key = pair.slice(0, colon);
      if (
        colon <= 0 ||
        !PLAIN_KEY.test(key) ||
        typeof quickPlain(key) !== 'string' ||
        Object.hasOwn(out, key) ||
        key === '__proto__'
      )
        throw UNSURE;
      out[key] = quickPlain(pair.slice(colon + 2).trim());
    }
    return out;
  }
  return quickPlain(text);
}

function quickFlow(inner: string): string[] {
  if (inner.trim() === '') return [];
  if (/["'[\]{}#]/.test(inner)) throw UNSURE;
  const items = inner.split(',').map((s) => s.trim());
  if (items.at(-1) === '') items.pop(); // trailing comma
  return items;
}

/** A word no YAML 1.2 core-schema rule reads as anything but text, unless it is one of SPECIAL_WORDS. */
const SIMPLE_WORD = /^[A-Za-z_][A-Za-z0-9_./-]*$/;
const SPECIAL_WORDS = new Set([
  'true',
  'True',
  'TRUE',
  'false',
  'False',
  'FALSE',
  'null',
  'Null',
  'NULL',
]);

function quickPlain(text: string): unknown {
  if (SIMPLE_WORD.test(text) && !SPECIAL_WORDS.has(text)) return text;
  if (text === '-' || text.startsWith('- ')) throw UNSURE;
  if (text === '' || text === '~' || text === 'null' || text === 'Null' || text === 'NULL')
    return null;
  if (/^(true|True|TRUE)$/.test(text)) return true;
  if (/^(false|False|FALSE)$/.test(text)) return false;
  if (/^[-+]?[0-9]+$/.test(text)) {
    const n = Number(text);
    if (!Number.isSafeInteger(n)) throw UNSURE;
    return n;
  }
  if (
    /^[-+]?(\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?$/.test(text) ||
    /^[-+]?[0-9]+[eE][-+]?[0-9]+$/.test(text)
  ) {
    return Number(text);
  }
  // anything else YAML might read as a number, a special value or structure is left to it
  if (!PLAIN_TEXT.test(text) || (/^[-+.]?[0-9.]/.test(text) && /^[-+]?(0x|0o|\.)/i.test(text)))
    throw UNSURE;
  if (/: |:$| #|^[-?:,] /.test(text) || /^[-+]?\.(inf|Inf|INF|nan|NaN|NAN)$/.test(text))
    throw UNSURE;
  return text;
}

/** The plain value of a YAML text, by the quick reader when it can, else the full parser. */
export function parseYamlValue(text: string): unknown {
  const value = quickParse(text);
  return value === undefined ? parse(text) : value;
}

function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
