/**
 * The house rules of docs/architecture.md, checked on every source file: no import cycles, core's
 * domains import only downward, core never imports the binaries, and no room grows past 700 lines.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CORE = join(ROOT, 'packages/core/src');

/** core's domains, lowest first: a file may import its own domain or one to its left. */
const LAYERS = [
  'util',
  'yaml',
  'template',
  'validate',
  'store',
  'plan',
  'registry',
  'disks',
  'server',
  'client',
  'agent',
  'ssh',
] as const;

const MAX_LINES = 700;
const MAX_TOP_FILES = 5;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.test.ts'))
    .map((e) => join(e.parentPath, e.name));
}

/** Every file a source file imports (static, type-only, re-exports and dynamic), resolved. */
function importsOf(file: string): string[] {
  const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
  return importedFiles.map((f) => f.fileName).flatMap((spec) => resolveSpecifier(file, spec));
}

function resolveSpecifier(from: string, spec: string): string[] {
  if (spec.startsWith('.')) return spec.endsWith('.ts') ? [resolve(dirname(from), spec)] : [];
  const match = /^@imgctl\/(core|cli|agent)\/(.+)$/.exec(spec);
  if (match) return [join(ROOT, 'packages', match[1]!, 'src', `${match[2]}.ts`)];
  return [];
}

type Graph = Map<string, string[]>;

function importGraph(files: string[]): Graph {
  const known = new Set(files);
  return new Map(files.map((f) => [f, importsOf(f).filter((t) => known.has(t))]));
}

/** The cycles of a graph: its strongly connected components of more than one file, or a self-import. */
function findCycles(graph: Graph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  let next = 0;
  const visit = (node: string): void => {
    index.set(node, next);
    low.set(node, next);
    next += 1;
    stack.push(node);
    onStack.add(node);
    for (const to of graph.get(node) ?? []) {
      if (!index.has(to)) {
        visit(to);
        low.set(node, Math.min(low.get(node)!, low.get(to)!));
      } else if (onStack.has(to)) {
        low.set(node, Math.min(low.get(node)!, index.get(to)!));
      }
    }
    if (low.get(node) !== index.get(node)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== node);
    if (component.length > 1 || (graph.get(node) ?? []).includes(node)) cycles.push(component);
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return cycles;
}

/** The domain of a core file (its first folder under packages/core/src), or undefined. */
function domainOf(file: string): string | undefined {
  const rel = relative(CORE, file);
  if (rel.startsWith('..')) return undefined;
  const parts = rel.split('/');
  return parts.length > 1 ? parts[0] : '';
}

/** Imports that break the layering: upward between core domains, or from core into a binary. */
function layeringViolations(graph: Graph): string[] {
  const rank = (domain: string) => (LAYERS as readonly string[]).indexOf(domain);
  const violations: string[] = [];
  for (const [from, targets] of graph) {
    const fromDomain = domainOf(from);
    if (fromDomain === undefined) continue;
    for (const to of targets) {
      const toDomain = domainOf(to);
      const show = `${relative(ROOT, from)} imports ${relative(ROOT, to)}`;
      if (toDomain === undefined) violations.push(`${show}: core never imports a binary`);
      else if (rank(toDomain) > rank(fromDomain))
        violations.push(`${show}: ${fromDomain}/ may not import ${toDomain}/ (it is above it)`);
    }
  }
  return violations;
}

const packages = ['core', 'cli', 'agent'].map((p) => join(ROOT, 'packages', p, 'src'));
const files = packages.flatMap(sourceFiles);

describe('the house (docs/architecture.md)', () => {
  const graph = importGraph(files);

  it('has no import cycle', () => {
    const cycles = findCycles(graph).map((c) => c.map((f) => relative(ROOT, f)).join(' → '));
    expect(cycles).toEqual([]);
  });

  it("imports only downward between core's domains, and core never imports a binary", () => {
    expect(layeringViolations(graph)).toEqual([]);
  });

  it('puts every core file in a known domain, with at most a handful at the top', () => {
    const domains = new Set(files.map(domainOf).filter((d) => d !== undefined));
    const top = files.filter((f) => domainOf(f) === '');
    expect([...domains].filter((d) => d !== '' && !LAYERS.includes(d as never))).toEqual([]);
    expect(top.length).toBeLessThanOrEqual(MAX_TOP_FILES);
  });

  it(`has no source file over ${MAX_LINES} lines`, () => {
    const long = files
      .map((f) => ({
        file: relative(ROOT, f),
        lines: readFileSync(f, 'utf8').split('\n').length - 1,
      }))
      .filter(({ lines }) => lines > MAX_LINES);
    expect(long).toEqual([]);
  });

  it('draws the same layering as docs/architecture.md', () => {
    const doc = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8');
    expect(doc).toContain(LAYERS.map((l) => `\`${l}\``).join(' → '));
  });
});

describe('the checks themselves', () => {
  const a = '/x/packages/core/src/store/a.ts';
  const b = '/x/packages/core/src/store/b.ts';
  const c = '/x/packages/core/src/util/c.ts';

  it('find a cycle through three files and a self-import', () => {
    expect(
      findCycles(
        new Map([
          [a, [b]],
          [b, [c]],
          [c, [a]],
        ]),
      ),
    ).toHaveLength(1);
    expect(findCycles(new Map([[a, [a]]]))).toEqual([[a]]);
    expect(
      findCycles(
        new Map([
          [a, [b]],
          [b, [c]],
          [c, []],
        ]),
      ),
    ).toEqual([]);
  });

  it('find an upward import and a core import of a binary', () => {
    const up = join(CORE, 'util/names.ts');
    const down = join(CORE, 'agent/virt.ts');
    const bin = join(ROOT, 'packages/cli/src/main.ts');
    expect(layeringViolations(new Map([[down, [up]]]))).toEqual([]);
    expect(layeringViolations(new Map([[up, [down]]]))).toEqual([
      'packages/core/src/util/names.ts imports packages/core/src/agent/virt.ts: util/ may not import agent/ (it is above it)',
    ]);
    expect(layeringViolations(new Map([[up, [bin]]]))[0]).toMatch(/core never imports a binary/);
  });
});
