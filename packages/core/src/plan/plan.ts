/**
 * Resolution (design.md §3): image defaults < record < system < command line (--set) give the
 * plan, the single fully-resolved document the agent executes. docs/plan.md describes it.
 */
import { readFile, realpath } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { parse as parseYamlValue } from 'yaml';
import {
  formatProblem,
  type PathSegment,
  type Problem,
  problemAt,
  type YamlFile,
} from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { assertName, printable } from '../util/names.ts';
import { parseSize } from '../util/sizes.ts';
import { exists, storePaths } from '../store/store.ts';
import { renderTemplate, templateVariables } from '../template/template.ts';
import {
  API_VERSION,
  type ImageDoc,
  type ImageRecordDoc,
  type ImageStoreDoc,
  type Layer,
  type Nic,
  type Parameter,
  type PlanDisk,
  type PlanDoc,
  type SystemDoc,
} from '../store/types.ts';
import { loadDocument } from '../validate/validate.ts';

export interface PlanRequest {
  image: string;
  record?: string;
  system?: string;
  /** `--set` arguments, each `NAME=VALUE`; the last one for a name wins */
  sets?: string[];
  vmName?: string;
}

/** Names every template sees besides the parameters; a parameter may not take one of them. */
export const TEMPLATE_VARIABLES = [
  'IMAGE_STORE',
  'IMAGE_NAME',
  'VM_NAME',
  'SYSTEM_NAME',
  'HOSTNAME',
] as const;
/** Extra names a rendered image file (the kickstart) sees. */
const FILE_CONTEXT_NAMES = ['system', 'disks', 'devices'] as const;

export const REDACTED = '<redacted>';

interface Loaded<T> {
  value: T;
  yaml: YamlFile;
}

/** One layer that sets parameter values, with what error messages need to point at it. */
interface ValueLayer {
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

/**
 * Resolves the plan for `request`. Throws ImgctlError: NOT_FOUND for a missing image, record or
 * system; VALIDATION for a system of another image, an unknown, computed or non-customizable
 * parameter set by a layer, a value of the wrong type, a computed cycle, a shrinking disk;
 * USAGE for a malformed --set or name. Secrets are in the result: print `redactPlan(plan)`.
 */
export async function resolvePlan(storeDir: string, request: PlanRequest): Promise<PlanDoc> {
  const imageName = assertName('image', request.image);
  const sets = parseSets(request.sets ?? []);
  const vmName = request.vmName === undefined ? undefined : assertName('VM', request.vmName);

  const image = await loadDocument<ImageDoc>(
    'Image',
    storePaths.imageFile(storeDir, imageName),
    storePaths.rel.imageFile(imageName),
    { expectedName: imageName },
  );
  const system =
    request.system === undefined
      ? undefined
      : await loadDocument<SystemDoc>(
          'System',
          storePaths.systemFile(storeDir, request.system),
          storePaths.rel.systemFile(request.system),
          { expectedName: request.system },
        );
  if (system && system.value.image !== imageName) {
    const { line, col } = locateIn(system.yaml, ['image']);
    throw new ImgctlError(
      'VALIDATION',
      `${system.yaml.file}:${line}:${col} image: system '${system.value.name}' runs image '${system.value.image}', not '${imageName}'`,
      { hint: `plan it with 'imgctl plan ${system.value.image} --system ${system.value.name}'` },
    );
  }
  const defaults = await storeDefaults(storeDir);
  const recordName = assertName(
    'record',
    request.record ?? system?.value.record ?? defaults.record ?? 'default',
  );
  const record = await loadDocument<ImageRecordDoc>(
    'ImageRecord',
    storePaths.recordFile(storeDir, imageName, recordName),
    storePaths.rel.recordFile(imageName, recordName),
    { expectedName: recordName, expectedImage: imageName },
  );

  const vm_name = vmName ?? system?.value.name ?? imageName;
  const hostname = system?.value.hostname ?? vm_name;
  const variables: Record<string, string> = {
    IMAGE_STORE: resolve(storeDir),
    IMAGE_NAME: imageName,
    VM_NAME: vm_name,
    SYSTEM_NAME: system?.value.name ?? '',
    HOSTNAME: hostname,
  };

  const problems: Problem[] = [];
  const layers: ValueLayer[] = [
    {
      layer: 'record',
      who: `the record '${recordName}'`,
      values: record.value.provision?.parameters ?? {},
      yaml: record.yaml,
      path: ['provision', 'parameters'],
    },
  ];
  if (system) {
    layers.push({
      layer: 'system',
      who: `the system '${system.value.name}'`,
      values: system.value.parameters ?? {},
      yaml: system.yaml,
      path: ['parameters'],
    });
  }
  layers.push({
    layer: 'command line',
    who: 'the command line',
    values: sets.values,
    path: [],
    args: sets.args,
  });

  const resolved = resolveParameters(image, layers, variables, problems);
  const disks = resolveDisks(image, record, problems);
  if (problems.length > 0) throw planError(imageName, problems);

  const devices = resolveDevices(
    image.value,
    record.value,
    system?.value,
    defaults.network ?? 'default',
  );
  const provision = await resolveProvision(storeDir, image.value);

  const plan: PlanDoc = {
    apiVersion: API_VERSION,
    kind: 'Plan',
    image: compact({
      name: imageName,
      revision: image.value.revision,
      label: image.value.label,
      os: image.value.os,
      parent: image.value.parent,
    }),
    record: recordName,
    system: system?.value.name,
    vm_name,
    hostname,
    boot: image.value.boot,
    devices,
    disks,
    interfaces: system?.value.interfaces ?? [],
    ssh_authorized_keys: system?.value.ssh_authorized_keys ?? [],
    target_disk: system?.value.target_disk,
    parameters: resolved.values,
    parameter_sources: resolved.sources,
    secrets: resolved.secrets,
    variables,
    provision,
    requires: image.value.requires,
  };
  return compact(plan);
}

/** A copy of `plan` with the value of every secret parameter replaced by '<redacted>'. */
export function redactPlan(plan: PlanDoc): PlanDoc {
  const copy = structuredClone(plan);
  for (const name of copy.secrets) {
    if (Object.hasOwn(copy.parameters, name) && copy.parameters[name] !== null)
      copy.parameters[name] = REDACTED;
  }
  return copy;
}

export type ImageFileKind = 'kickstart';

/**
 * Renders an image's file for a plan: the kickstart (`provision.kickstart`, else `kickstart.ks`).
 * The template sees every parameter, the template variables, `system` (name, hostname,
 * interfaces, ssh_authorized_keys), `disks` and `devices`. Pass the unredacted plan: secrets are
 * rendered in, since the file is the machine's configuration.
 */
export async function renderImageFile(
  storeDir: string,
  plan: PlanDoc,
  kind: ImageFileKind,
): Promise<string> {
  if (kind !== 'kickstart')
    throw new ImgctlError('USAGE', `cannot render '${printable(String(kind))}'`);
  const imageDir = storePaths.imageDir(storeDir, plan.image.name);
  const file = plan.provision.kickstart ?? 'kickstart.ks';
  const abs = resolve(imageDir, file);
  const display = `images/${plan.image.name}/${file}`;
  if (!abs.startsWith(imageDir + sep)) {
    throw new ImgctlError(
      'VALIDATION',
      `${storePaths.rel.imageFile(plan.image.name)}: provision.kickstart '${printable(file)}' is outside the image`,
    );
  }
  let source: string;
  try {
    // A symlink must not lead a kickstart out of the image either.
    const [realDir, realFile] = await Promise.all([realpath(imageDir), realpath(abs)]);
    if (!realFile.startsWith(realDir + sep)) {
      throw new ImgctlError(
        'VALIDATION',
        `${display} leads outside images/${plan.image.name}/ (a symlink); templates are read from the image only`,
      );
    }
    source = await readFile(realFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ImgctlError(
        'NOT_FOUND',
        `image '${plan.image.name}' has no kickstart (${display} does not exist)`,
        {
          hint: `write ${display}, or set provision.kickstart in ${storePaths.rel.imageFile(plan.image.name)}`,
        },
      );
    }
    throw error;
  }
  return renderTemplate(source, fileContext(plan), { name: display });
}

function fileContext(plan: PlanDoc): Record<string, unknown> {
  return {
    ...plan.parameters,
    ...plan.variables,
    system: {
      name: plan.system ?? '',
      hostname: plan.hostname,
      interfaces: plan.interfaces,
      ssh_authorized_keys: plan.ssh_authorized_keys,
    },
    disks: plan.disks,
    devices: plan.devices,
  };
}

async function storeDefaults(storeDir: string): Promise<NonNullable<ImageStoreDoc['defaults']>> {
  const file = storePaths.storeFile(storeDir);
  if (!(await exists(file))) return {};
  const { value } = await loadDocument<ImageStoreDoc>('ImageStore', file, 'store.yaml');
  return value.defaults ?? {};
}

interface ParsedSets {
  values: Record<string, unknown>;
  args: Record<string, string>;
}

/** `NAME=VALUE` arguments as raw strings; typed later, once the parameter is known. */
function parseSets(sets: string[]): ParsedSets {
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

function resolveParameters(
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

type Typed = { ok: true; value: unknown } | { ok: false; error: string };

/**
 * Checks a value from YAML against the parameter's type, as strictly as `image validate` does
 * (an integer is a YAML number, a boolean is true or false); a number or boolean given for a
 * string parameter becomes its text.
 */
function typeValue(p: Parameter, value: unknown): Typed {
  if (value === null) return { ok: true, value: null };
  switch (p.type) {
    case undefined:
      return { ok: true, value };
    case 'string':
      if (typeof value === 'string') return { ok: true, value };
      if (typeof value === 'number' || typeof value === 'boolean')
        return { ok: true, value: String(value) };
      return { ok: false, error: `expected a string, got ${describe(value)}` };
    case 'integer':
      return Number.isSafeInteger(value)
        ? { ok: true, value }
        : { ok: false, error: `expected an integer, got ${describe(value)}` };
    case 'boolean':
      return typeof value === 'boolean'
        ? { ok: true, value }
        : { ok: false, error: `expected true or false, got ${describe(value)}` };
    case 'size':
      if (typeof value === 'string' || typeof value === 'number') return parseSizeValue(value);
      return { ok: false, error: `expected a size (e.g. 512MiB, 2GiB), got ${describe(value)}` };
  }
}

/** A --set value (always text) read by the parameter's type. */
function parseCommandLineValue(p: Parameter, text: string): Typed {
  switch (p.type) {
    case 'string':
      return { ok: true, value: text };
    case 'integer':
      return parseInteger(text);
    case 'boolean':
      return parseBoolean(text);
    case 'size':
      return parseSizeValue(text);
    case undefined:
      // Untyped: like the image's default — text when the default is text, else read as YAML
      // (so a list or a number can be given); `1.10` stays text for a text parameter.
      if (typeof p.default === 'string' || text === '') return { ok: true, value: text };
      try {
        return { ok: true, value: parseYamlValue(text) ?? null };
      } catch {
        return { ok: true, value: text };
      }
  }
}

function parseInteger(text: string): Typed {
  const t = text.trim();
  if (/^[+-]?\d+$/.test(t) && Number.isSafeInteger(Number(t)))
    return { ok: true, value: Number(t) };
  return { ok: false, error: `expected an integer, got '${printable(text)}'` };
}

function parseBoolean(text: string): Typed {
  const t = text.trim().toLowerCase();
  if (['true', 'yes', 'on'].includes(t)) return { ok: true, value: true };
  if (['false', 'no', 'off'].includes(t)) return { ok: true, value: false };
  return {
    ok: false,
    error: `expected a boolean (true, false, yes, no), got '${printable(text)}'`,
  };
}

/** Sizes stay as written (`2GiB`), checked; a bare byte count becomes a number. */
function parseSizeValue(value: string | number): Typed {
  try {
    const bytes = parseSize(value);
    if (typeof value === 'number' || /^\d+$/.test(value.trim())) return { ok: true, value: bytes };
    return { ok: true, value: value.trim() };
  } catch {
    return {
      ok: false,
      error: `expected a size (e.g. 512MiB, 2GiB), got '${printable(String(value))}'`,
    };
  }
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return `'${printable(String(value))}'`;
}

function resolveDisks(
  image: Loaded<ImageDoc>,
  record: Loaded<ImageRecordDoc>,
  problems: Problem[],
): PlanDisk[] {
  const wanted = record.value.provision?.disks ?? {};
  const ids = new Set(image.value.disks.map((d) => d.id));
  for (const id of Object.keys(wanted)) {
    if (!ids.has(id)) {
      problems.push(
        problemAt(
          record.yaml,
          ['provision', 'disks', id],
          `record '${record.value.name}' sizes disk '${id}', which image '${image.value.name}' does not have (it has ${[...ids].join(', ') || 'none'})`,
          { key: true },
        ),
      );
    }
  }
  const disks: PlanDisk[] = [];
  for (const [i, disk] of image.value.disks.entries()) {
    let imageSize: number;
    try {
      imageSize = parseSize(disk.size);
    } catch (error) {
      problems.push(asProblem(image.yaml, ['disks', i, 'size'], error));
      continue;
    }
    let size = imageSize;
    const want = Object.hasOwn(wanted, disk.id) ? wanted[disk.id]?.size : undefined;
    if (want !== undefined) {
      try {
        size = parseSize(want);
      } catch (error) {
        problems.push(asProblem(record.yaml, ['provision', 'disks', disk.id, 'size'], error));
        continue;
      }
      if (size < imageSize) {
        problems.push(
          problemAt(
            record.yaml,
            ['provision', 'disks', disk.id, 'size'],
            `record '${record.value.name}' asks for disk '${disk.id}' of ${want}, smaller than the image's ${disk.size}: disks can grow, never shrink`,
          ),
        );
        continue;
      }
    }
    disks.push(
      compact({
        id: disk.id,
        use: disk.use,
        format: disk.format,
        image_size: imageSize,
        size,
        sha256: disk.sha256,
        blob: disk.blob,
        url: disk.url,
      }),
    );
  }
  return disks;
}

/**
 * vcpus and memory from the record over the image; one NIC per system interface (its MAC, bridge
 * or network) over the record's NICs over the image's; a NIC attached to nothing goes on the
 * store's default network, a NIC without a model is virtio.
 */
function resolveDevices(
  image: ImageDoc,
  record: ImageRecordDoc,
  system: SystemDoc | undefined,
  defaultNetwork: string,
): PlanDoc['devices'] {
  const base: Nic[] = record.provision?.nics ?? image.devices.nics ?? [];
  const interfaces = system?.interfaces ?? [];
  const merged: Nic[] =
    interfaces.length > 0
      ? interfaces.map((iface, i) => {
          const fallback = base[i] ?? base[0];
          const attached = iface.bridge !== undefined || iface.network !== undefined;
          return {
            model: fallback?.model,
            network: attached ? iface.network : fallback?.network,
            bridge: attached ? iface.bridge : fallback?.bridge,
            mac: iface.mac ?? (base[i] === undefined ? undefined : fallback?.mac),
          };
        })
      : base;
  const nics = merged.map((nic) =>
    compact<Nic>({
      model: nic.model ?? 'virtio',
      network: nic.bridge === undefined ? (nic.network ?? defaultNetwork) : undefined,
      bridge: nic.bridge,
      mac: nic.mac,
    }),
  );
  return {
    vcpus: record.provision?.vcpus ?? image.devices.vcpus,
    memory: parseSize(record.provision?.memory ?? image.devices.memory),
    nics,
    graphics: image.devices.graphics ?? 'none',
    console: image.devices.console ?? 'serial',
  };
}

/** The provisioning files: those named in the image, else the conventional ones that exist. */
async function resolveProvision(storeDir: string, image: ImageDoc): Promise<PlanDoc['provision']> {
  const dir = storePaths.imageDir(storeDir, image.name);
  const script =
    image.provision?.script ??
    ((await exists(join(dir, 'provision.sh'))) ? 'provision.sh' : undefined);
  const kickstart =
    image.provision?.kickstart ??
    ((await exists(join(dir, 'kickstart.ks'))) ? 'kickstart.ks' : undefined);
  return compact({ script, custom_scripts: image.provision?.custom_scripts ?? [], kickstart });
}

function layerProblem(layer: ValueLayer, name: string, message: string, key: boolean): Problem {
  if (layer.yaml) return problemAt(layer.yaml, [...layer.path, name], message, { key });
  return { file: '--set', line: 0, col: 0, path: layer.args?.[name] ?? name, message };
}

function locateIn(yaml: YamlFile, path: PathSegment[]): { line: number; col: number } {
  const p = problemAt(yaml, path, '');
  return { line: p.line, col: p.col };
}

/** An error about a value of a file; a template's own position becomes a note after the message. */
function asProblem(yaml: YamlFile, path: PathSegment[], error: unknown): Problem {
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

function planError(image: string, problems: Problem[]): ImgctlError {
  const lines = problems.map(formatPlanProblem);
  if (lines.length === 1) return new ImgctlError('VALIDATION', lines[0]!);
  return new ImgctlError('VALIDATION', `${lines.length} problems in the plan of image '${image}'`, {
    details: lines,
  });
}

/** Drops undefined members so the plan prints the same way every time (and YAML/JSON agree). */
function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
