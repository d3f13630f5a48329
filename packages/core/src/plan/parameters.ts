/**
 * A plan's parameters: the image's defaults, then each layer's values (record, system, `--set`)
 * checked against the declaration and typed, then the computed ones rendered in dependency order.
 */
import { type PathSegment, type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { renderTemplate, templateVariables } from '../template/template.ts';
import type { ImageDoc, Layer } from '../store/types.ts';
import { FILE_CONTEXT_NAMES } from './image-files.ts';
import { parseCommandLineValue, typeValue } from './parameter-types.ts';
import { asProblem, type Loaded } from './problems.ts';

/** Names every template sees besides the parameters; a parameter may not take one of them. */
const TEMPLATE_VARIABLES = [
  'IMAGE_STORE',
  'IMAGE_NAME',
  'VM_NAME',
  'SYSTEM_NAME',
  'HOSTNAME',
] as const;

/** One layer that sets parameter values, with what error messages need to point at it. */
export interface ValueLayer {
  layer: Exclude<Layer, 'image'>;
  /** "the record 'large'", "the system 'db1'", "the command line" */
  who: string;
  values: Record<string, unknown>;
  /** where the values are in the file; absent for the command line */
  yaml?: YamlFile;
  path: PathSegment[];
  /** the --set argument that gave each value */
  args?: Record<string, string>;
}

interface ParsedSets {
  values: Record<string, unknown>;
  args: Record<string, string>;
}

/** `NAME=VALUE` arguments as raw strings; typed later, once the parameter is known. */
export function parseSets(sets: string[]): ParsedSets {
  const values: Record<string, unknown> = {};
  const args: Record<string, string> = {};
  for (const arg of sets) {
    const eq = arg.indexOf('=');
    const name = eq < 0 ? '' : arg.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new ImgctlError('USAGE', `--set expects NAME=VALUE, got '${printable(arg)}'`, {
        hint: 'e.g. --set http_port=8080 --set debug=yes',
      });
    }
    values[name] = arg.slice(eq + 1);
    args[name] = arg;
  }
  return { values, args };
}

interface ResolvedParameters {
  values: Record<string, unknown>;
  sources: Record<string, Layer | 'computed'>;
  secrets: string[];
}

/**
 * The values, the layer each came from and the secret names, in the image's declaration order;
 * every problem found is pushed to `problems` (values are partial then).
 */
export function resolveParameters(
  image: Loaded<ImageDoc>,
  layers: ValueLayer[],
  variables: Record<string, string>,
  problems: Problem[],
): ResolvedParameters {
  const declared = image.value.parameters ?? {};
  const names = Object.keys(declared);
  const values: Record<string, unknown> = {};
  const sources: Record<string, Layer | 'computed'> = {};
  const imageAt = (name: string, ...rest: PathSegment[]) => ['parameters', name, ...rest];

  for (const name of names) {
    const p = declared[name]!;
    if (
      (TEMPLATE_VARIABLES as readonly string[]).includes(name) ||
      (FILE_CONTEXT_NAMES as readonly string[]).includes(name)
    ) {
      problems.push(
        problemAt(
          image.yaml,
          imageAt(name),
          `parameter '${name}' has the name of a template variable; rename it`,
          { key: true },
        ),
      );
      continue;
    }
    if (p.computed !== undefined) continue;
    if (p.default === undefined) {
      values[name] = null;
    } else {
      const typed = typeValue(p, p.default);
      if (typed.ok) values[name] = typed.value;
      else
        problems.push(
          problemAt(image.yaml, imageAt(name, 'default'), `parameter '${name}': ${typed.error}`),
        );
    }
    sources[name] = 'image';
  }

  for (const layer of layers) {
    for (const [name, raw] of Object.entries(layer.values)) {
      const p = Object.hasOwn(declared, name) ? declared[name] : undefined;
      const where = (message: string, key = false) => layerProblem(layer, name, message, key);
      if (p === undefined) {
        const known = names.length > 0 ? `; it declares ${names.join(', ')}` : '; it declares none';
        problems.push(
          where(
            `${layer.who} sets parameter '${name}', which image '${image.value.name}' does not declare${known}`,
            true,
          ),
        );
      } else if (p.computed !== undefined) {
        problems.push(
          where(`parameter '${name}' is computed by the image, ${layer.who} tried to set it`, true),
        );
      } else if (p.customizable === false) {
        problems.push(
          where(
            `parameter '${name}' is not customizable: the image fixes it, ${layer.who} tried to set it`,
            true,
          ),
        );
      } else {
        const typed =
          layer.layer === 'command line'
            ? parseCommandLineValue(p, String(raw))
            : typeValue(p, raw);
        if (typed.ok) {
          values[name] = typed.value;
          sources[name] = layer.layer;
        } else {
          // A secret's rejected value is not echoed back.
          const error = p.secret === true ? typed.error.replace(/, got .*$/, '') : typed.error;
          problems.push(where(`parameter '${name}': ${error} (from ${layer.who})`));
        }
      }
    }
  }
  if (problems.length > 0) return { values, sources, secrets: [] };

  const secret = new Set(names.filter((n) => declared[n]!.secret === true));
  computeParameters(image, values, sources, secret, variables, problems);

  // Plan order is the image's declaration order, whatever order the values were found in.
  const ordered: Record<string, unknown> = {};
  const orderedSources: Record<string, Layer | 'computed'> = {};
  for (const name of names) {
    if (!Object.hasOwn(values, name)) continue;
    ordered[name] = values[name];
    orderedSources[name] = sources[name]!;
  }
  return { values: ordered, sources: orderedSources, secrets: names.filter((n) => secret.has(n)) };
}

/**
 * Renders computed parameters in dependency order; a computed parameter that reads a secret
 * (directly or through another computed one) becomes secret itself, so redaction covers it.
 */
function computeParameters(
  image: Loaded<ImageDoc>,
  values: Record<string, unknown>,
  sources: Record<string, Layer | 'computed'>,
  secret: Set<string>,
  variables: Record<string, string>,
  problems: Problem[],
): void {
  const declared = image.value.parameters ?? {};
  const computed = Object.keys(declared).filter((n) => declared[n]!.computed !== undefined);
  const deps = new Map<string, string[]>();
  for (const name of computed) {
    try {
      const used = templateVariables(declared[name]!.computed!);
      deps.set(
        name,
        used.filter((u) => Object.hasOwn(declared, u)),
      );
    } catch (error) {
      problems.push(asProblem(image.yaml, ['parameters', name, 'computed'], error));
    }
  }
  if (problems.length > 0) return;

  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, path: string[]): boolean => {
    if (state.get(name) === 'done') return true;
    if (state.get(name) === 'visiting') {
      const cycle = [...path.slice(path.indexOf(name)), name];
      problems.push(
        problemAt(
          image.yaml,
          ['parameters', name, 'computed'],
          `computed parameters form a cycle: ${cycle.join(' -> ')}`,
        ),
      );
      return false;
    }
    state.set(name, 'visiting');
    for (const dep of deps.get(name) ?? []) {
      if (deps.has(dep) && !visit(dep, [...path, name])) return false;
    }
    state.set(name, 'done');
    order.push(name);
    return true;
  };
  for (const name of computed) if (!visit(name, [])) return;

  // A computed parameter over one that failed is not reported again.
  const failed = new Set<string>();
  for (const name of order) {
    const p = declared[name]!;
    if ((deps.get(name) ?? []).some((d) => failed.has(d))) {
      failed.add(name);
      continue;
    }
    if ((deps.get(name) ?? []).some((d) => secret.has(d))) secret.add(name);
    try {
      const rendered = renderTemplate(p.computed!, { ...values, ...variables });
      const typed =
        p.type === undefined || p.type === 'string'
          ? { ok: true as const, value: rendered }
          : parseCommandLineValue(p, rendered.trim());
      if (!typed.ok) {
        problems.push(
          problemAt(
            image.yaml,
            ['parameters', name, 'computed'],
            `parameter '${name}': ${typed.error}`,
          ),
        );
        failed.add(name);
        continue;
      }
      values[name] = typed.value;
      sources[name] = 'computed';
    } catch (error) {
      problems.push(asProblem(image.yaml, ['parameters', name, 'computed'], error));
      failed.add(name);
    }
  }
}

function layerProblem(layer: ValueLayer, name: string, message: string, key: boolean): Problem {
  if (layer.yaml) return problemAt(layer.yaml, [...layer.path, name], message, { key });
  return { file: '--set', line: 0, col: 0, path: layer.args?.[name] ?? name, message };
}
