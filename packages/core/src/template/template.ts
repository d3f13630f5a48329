/**
 * The template engine of kickstarts and computed parameters: Liquid (liquidjs), which reads like
 * Jinja (`{{ var | filter }}`, `{% if %}`, `{% for %}`) and cannot run code. docs/templates.md
 * describes the syntax and the filters.
 *
 * Safety: templates see only the own properties of the data they are given (no `constructor`, no
 * prototypes, so nothing reaches `process`); `include`, `render` and `layout` are removed, so a
 * template reads no file; parse size, render time, render steps and allocations are bounded, so a
 * hostile template fails instead of hanging or exhausting memory.
 */
import { type FilterImplOptions, type FS, Liquid, LiquidError, type Template } from 'liquidjs';
import { stringify as stringifyYaml } from 'yaml';
import { ImgctlError } from '../util/errors.ts';
import { parseSize } from '../util/sizes.ts';

/** Bounds for one parse and one render; kickstarts are kilobytes, so these leave a wide margin. */
const TEMPLATE_LIMITS = {
  /** characters of template source */
  parseLimit: 1_000_000,
  /** milliseconds of rendering */
  renderLimit: 2_000,
  /** liquidjs allocation units (array and string lengths created while rendering) */
  memoryLimit: 10_000_000,
  /** tags, outputs and text chunks rendered */
  templateLimit: 1_000_000,
} as const;

export interface TemplateProblem {
  line: number;
  col: number;
  message: string;
}

const refusingFs: FS = {
  exists: async () => false,
  existsSync: () => false,
  readFile: async (file) => refuseFile(file),
  readFileSync: (file) => refuseFile(file),
  resolve: (_dir, file) => file,
  contains: async () => false,
  containsSync: () => false,
};

function refuseFile(file: string): never {
  throw new Error(`templates cannot read files (${file})`);
}

/** What liquidjs binds `this` to in a filter (it does not export the type). */
type FilterImpl = ThisParameterType<Extract<FilterImplOptions, (...args: never[]) => unknown>>;

/** A tag that refuses to parse: templates are self-contained and never read files. */
function refusedTag(name: string) {
  return {
    parse() {
      throw new Error(`{% ${name} %} is not available: templates cannot read other files`);
    },
    render() {},
  };
}

function createEngine(): Liquid {
  const engine = new Liquid({
    strictVariables: true,
    strictFilters: true,
    ownPropertyOnly: true,
    // `{% if x %}` and `x | default: …` accept an undefined x, as Jinja's `default` does.
    lenientIf: true,
    // Jinja truthiness for "" and 0 (Liquid treats both as true).
    jsTruthy: true,
    cache: false,
    fs: refusingFs,
    relativeReference: false,
    root: [],
    partials: [],
    layouts: [],
    parseLimit: TEMPLATE_LIMITS.parseLimit,
    renderLimit: TEMPLATE_LIMITS.renderLimit,
    memoryLimit: TEMPLATE_LIMITS.memoryLimit,
  });
  for (const name of ['include', 'render', 'layout']) engine.registerTag(name, refusedTag(name));
  registerJinjaFilters(engine);
  return engine;
}

/**
 * Jinja and Ansible filter names sysadmins reach for, next to Liquid's own (`upcase`, `strip`,
 * `default`, `join`, `replace`, `size`, …).
 */
function registerJinjaFilters(engine: Liquid): void {
  const alias = (name: string, target: string) => {
    const impl = engine.filters[target];
    if (impl === undefined) throw new Error(`liquidjs lacks the filter ${target}`);
    engine.registerFilter(name, impl);
  };
  alias('upper', 'upcase');
  alias('lower', 'downcase');
  alias('trim', 'strip');
  alias('length', 'size');
  alias('count', 'size');
  alias('int', 'to_integer');
  alias('b64encode', 'base64_encode');
  alias('b64decode', 'base64_decode');

  engine.registerFilter('quote', function (this: FilterImpl, value: unknown) {
    const out = Array.isArray(value)
      ? value.map((v) => shellQuote(toText(v))).join(' ')
      : shellQuote(toText(value));
    return charge(this, out);
  });
  engine.registerFilter('to_json', function (this: FilterImpl, value: unknown) {
    return charge(this, JSON.stringify(value ?? null));
  });
  engine.registerFilter(
    'to_nice_json',
    function (this: FilterImpl, value: unknown, width: unknown = 4) {
      return charge(this, JSON.stringify(value ?? null, null, clampWidth(width)));
    },
  );
  engine.registerFilter('to_yaml', function (this: FilterImpl, value: unknown) {
    return charge(this, stringifyYaml(value ?? null).replace(/\n$/, ''));
  });
  engine.registerFilter(
    'indent',
    function (
      this: FilterImpl,
      value: unknown,
      width: unknown = 4,
      first: unknown = false,
      blank: unknown = false,
    ) {
      const pad = typeof width === 'string' ? width : ' '.repeat(clampWidth(width));
      const lines = toText(value).split('\n');
      const out = lines
        .map((line, i) =>
          (i > 0 || first === true) && (blank === true || line.trim() !== '') ? pad + line : line,
        )
        .join('\n');
      return charge(this, out);
    },
  );
  engine.registerFilter('bool', (value: unknown) => {
    if (typeof value === 'string')
      return ['true', 'yes', 'on', '1'].includes(value.trim().toLowerCase());
    return Boolean(value);
  });
  // Sizes as written in the store (`2GiB`) to numbers, e.g. for kickstart's `part --size` (MiB).
  engine.registerFilter('bytes', (value: unknown) => parseSize(value as string | number));
  engine.registerFilter('mib', (value: unknown) =>
    Math.floor(parseSize(value as string | number) / 1024 ** 2),
  );
}

function charge(filter: FilterImpl, out: string): string {
  filter.context.memoryLimit.use(out.length);
  return out;
}

function clampWidth(width: unknown): number {
  const n = Number(width);
  return Number.isInteger(n) && n >= 0 ? Math.min(n, 64) : 4;
}

function toText(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** Shell-quotes like Python's shlex.quote (Ansible's `quote`): safe words stay as they are. */
export function shellQuote(text: string): string {
  if (text === '') return "''";
  if (!/[^\w@%+=:,./-]/.test(text)) return text;
  return `'${text.replaceAll("'", `'"'"'`)}'`;
}

const engine = createEngine();

function parse(source: string, name: string): Template[] {
  try {
    return engine.parse(source, name);
  } catch (error) {
    throw toImgctlError(error, name);
  }
}

/**
 * Renders `source` over `context`. Throws ImgctlError('VALIDATION', '<name>:<line>:<col>: <message>')
 * on a syntax error, an undefined variable or filter, a refused tag, or an exceeded limit.
 */
export function renderTemplate(
  source: string,
  context: Record<string, unknown>,
  options: { name?: string } = {},
): string {
  const name = options.name ?? 'template';
  const templates = parse(source, name);
  try {
    return String(
      engine.renderSync(templates, context, { templateLimit: TEMPLATE_LIMITS.templateLimit }),
    );
  } catch (error) {
    throw toImgctlError(error, name);
  }
}

/** The problems that keep `source` from parsing; empty when it parses. Rendering may still fail. */
export function checkTemplate(source: string): TemplateProblem[] {
  try {
    engine.parse(source);
    return [];
  } catch (error) {
    return [problemOf(error)];
  }
}

/**
 * The names of the variables a template reads from its context (not those it assigns or loops
 * over), sorted: what a computed parameter depends on.
 */
export function templateVariables(source: string, options: { name?: string } = {}): string[] {
  const name = options.name ?? 'template';
  const templates = parse(source, name);
  try {
    return [...new Set(engine.globalVariablesSync(templates))].sort();
  } catch (error) {
    throw toImgctlError(error, name);
  }
}

function problemOf(error: unknown): TemplateProblem {
  if (error instanceof LiquidError) {
    const [line, col] = error.token?.getPosition() ?? [1, 1];
    const message = (error.originalError?.message ?? error.message).replace(
      /, line:\d+, col:\d+$/,
      '',
    );
    return { line: line ?? 1, col: col ?? 1, message: innermost(message) };
  }
  if (error instanceof ImgctlError) return { line: 1, col: 1, message: error.message };
  throw error;
}

/** liquidjs nests "…, line:1, col:1" of inner errors in outer messages; keep the plain sentence. */
function innermost(message: string): string {
  return message.replace(/, line:\d+, col:\d+/g, '').replace(/, file:\S*/g, '');
}

function toImgctlError(error: unknown, name: string): ImgctlError {
  if (error instanceof ImgctlError && !error.message.startsWith(`${name}:`)) {
    return new ImgctlError(error.code, `${name}: ${error.message}`, {
      hint: error.hint,
      cause: error,
    });
  }
  const p = problemOf(error);
  return new ImgctlError('VALIDATION', `${name}:${p.line}:${p.col}: ${p.message}`, {
    cause: error,
  });
}
