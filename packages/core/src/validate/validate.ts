import type { Dirent } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { join } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { CST, LineCounter, Parser } from 'yaml';
import imageSchema from '../../../../schemas/image.schema.json' with { type: 'json' };
import recordSchema from '../../../../schemas/image-record.schema.json' with { type: 'json' };
import storeSchema from '../../../../schemas/image-store.schema.json' with { type: 'json' };
import planSchema from '../../../../schemas/plan.schema.json' with { type: 'json' };
import systemSchema from '../../../../schemas/system.schema.json' with { type: 'json' };
import {
  formatPath,
  formatProblem,
  type PathSegment,
  type Problem,
  parseYaml,
  problemAt,
  type YamlFile,
} from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { isValidName } from '../util/names.ts';
import { readYamlQuickly } from '../yaml/quick-yaml.ts';
import { parseSize, SIZE_PATTERN } from '../util/sizes.ts';
import { checkTemplate } from '../template/template.ts';

export type DocKind = 'ImageStore' | 'Image' | 'ImageRecord' | 'System' | 'Plan';

export interface ValidateOptions {
  /** the name the file's location gives it: image directory, record or system file name */
  expectedName?: string;
  /** for records: the image directory the record is stored under */
  expectedImage?: string;
}

export interface StoreValidation {
  problems: Problem[];
  counts: { images: number; records: number; systems: number };
}

const SCHEMAS: Record<DocKind, object> = {
  ImageStore: storeSchema,
  Image: imageSchema,
  ImageRecord: recordSchema,
  System: systemSchema,
  Plan: planSchema,
};

/** Messages for the shared `$defs` of the schemas, used for any failure inside them. */
const DEF_MESSAGES: Record<string, string> = {
  name: "must be a name of 1-63 characters a-z, 0-9, '.', '_' and '-', starting with a letter or digit, without '..'",
  size: 'must be a size like 512MiB, 2GiB or a byte count',
  sha256: 'must be a sha256 checksum: 64 lowercase hexadecimal digits',
  mac: 'must be a unicast MAC address like 52:54:00:12:34:56 (an even first byte)',
  target: 'must be a guest disk like vda, hda, sda or xvda',
  relPath: "must be a path relative to the image directory, without '..' or a leading '/'",
  ipPrefix:
    'must be an IPv4 or IPv6 address with a prefix length, like 192.0.2.10/24 or 2001:db8::10/64',
  ipAddress: 'must be an IPv4 or IPv6 address like 192.0.2.1 or 2001:db8::1',
  hostname: 'must be a host name like web1 or web1.example.com',
  paramName: "must be a parameter name: a letter or '_', then letters, digits or '_'",
  ifname: 'must be a network interface name of 1-15 characters, like eth0 or br0',
  netName: 'must be a libvirt network name like default',
  imageRef: 'must be IMAGE@REVISION, like web@3',
  url: 'must be an http://, https:// or file:// URL',
  httpUrl: 'must be an http:// or https:// URL',
  sshKey: "must be an OpenSSH public key line like 'ssh-ed25519 AAAA… user@host'",
  absPath: 'must be an absolute path like /dev/vda',
  sshAddress: 'must be [user@]host[:port], like root@192.0.2.10 or web1:2222',
  listen: 'must be [host:]port, like 0.0.0.0:8080',
  labelKey: "must be a label key of letters, digits, '.', '_', '/' and '-'",
  feature: 'must be a feature name of a-z, 0-9 and _, like acpi',
};

let ajvInstance: Ajv2020 | undefined;
const compiled = new Map<DocKind, ValidateFunction>();

function validatorFor(kind: DocKind): ValidateFunction {
  let validate = compiled.get(kind);
  if (!validate) {
    if (!ajvInstance) {
      ajvInstance = new Ajv2020({ allErrors: true, verbose: true, strict: true });
      // ajv-formats is CommonJS; its default export is the plugin function itself at runtime.
      const addFormats = addFormatsModule as unknown as (ajv: Ajv2020, formats: string[]) => void;
      addFormats(ajvInstance, ['ipv4', 'ipv6']);
      ajvInstance.addFormat('ip-prefix', isIpPrefix);
    }
    validate = ajvInstance.compile(SCHEMAS[kind]);
    compiled.set(kind, validate);
  }
  return validate;
}

function isIpPrefix(text: string): boolean {
  const slash = text.lastIndexOf('/');
  if (slash < 0) return false;
  const address = text.slice(0, slash);
  const prefix = text.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(prefix)) return false;
  const bits = Number(prefix);
  if (isIPv4(address)) return bits <= 32;
  if (isIPv6(address)) return bits <= 128;
  return false;
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
  const validate = validatorFor(kind);
  const problems = validate(y.value) ? [] : schemaProblems(y, validate.errors ?? []);
  if (isObject(y.value)) problems.push(...semanticProblems(kind, y, y.value, options));
  return sortProblems(dedupe(problems));
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

// ---------------------------------------------------------------------------------------------
// ajv errors → located problems

function schemaProblems(y: YamlFile, errors: readonly ErrorObject[]): Problem[] {
  const out: Problem[] = [];
  for (const error of errors) {
    const segments = instanceSegments(y.value, error.instancePath);
    const def = messageDef(error.schemaPath);
    const propertyName = (error as ErrorObject & { propertyName?: string }).propertyName;
    if (propertyName !== undefined) {
      const reason = def ? DEF_MESSAGES[def] : error.message;
      out.push(
        problemAt(y, [...segments, propertyName], `invalid key '${propertyName}': ${reason}`, {
          key: true,
        }),
      );
      continue;
    }
    if (error.keyword === 'propertyNames') continue; // reported through the inner error above
    if (def) {
      out.push(problemAt(y, segments, DEF_MESSAGES[def]!));
      continue;
    }
    if (/\/(anyOf|oneOf)\/[0-9]+\//.test(error.schemaPath)) continue; // branch of a composite
    out.push(describeError(y, segments, error));
  }
  return out;
}

function describeError(y: YamlFile, segments: PathSegment[], error: ErrorObject): Problem {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'additionalProperties': {
      const key = String(params.additionalProperty);
      const known = Object.keys(
        (error.parentSchema as { properties?: object } | undefined)?.properties ?? {},
      );
      const guess = closest(key, known);
      const hint = guess ? ` (did you mean '${guess}'?)` : '';
      return problemAt(y, [...segments, key], `unknown key '${key}'${hint}`, { key: true });
    }
    case 'required':
      return problemAt(y, segments, `missing required key '${String(params.missingProperty)}'`);
    case 'enum': {
      const allowed = (params.allowedValues as unknown[]).map(String).join(', ');
      return problemAt(y, segments, `must be one of: ${allowed} (got ${show(error.data)})`);
    }
    case 'const':
      return problemAt(
        y,
        segments,
        `must be '${String(params.allowedValue)}' (got ${show(error.data)})`,
      );
    case 'type': {
      const types = String(params.type).split(',').map(typeName).join(' or ');
      return problemAt(y, segments, `must be ${types} (got ${kindOf(error.data)})`);
    }
    case 'pattern':
      return problemAt(y, segments, `must match ${String(params.pattern)}`);
    case 'format':
      return problemAt(y, segments, `must be a valid ${String(params.format)}`);
    case 'minItems':
      return problemAt(
        y,
        segments,
        `must list at least ${String(params.limit)} entr${params.limit === 1 ? 'y' : 'ies'}`,
      );
    case 'uniqueItems':
      return problemAt(
        y,
        [...segments, Number(params.i)],
        `duplicate entry (same as ${formatPath([...segments, Number(params.j)])})`,
      );
    case 'anyOf':
    case 'oneOf':
      return problemAt(y, segments, 'does not match any allowed form');
    default:
      return problemAt(y, segments, error.message ?? `fails ${error.keyword}`);
  }
}

/** The innermost `$defs/<name>` of a schema path, when that definition has its own message. */
function messageDef(schemaPath: string): string | undefined {
  const match = /#\/\$defs\/([A-Za-z0-9_]+)/.exec(schemaPath);
  return match && match[1]! in DEF_MESSAGES ? match[1] : undefined;
}

/** JSON pointer → path segments, numbers for array indexes. */
function instanceSegments(value: unknown, pointer: string): PathSegment[] {
  if (pointer === '') return [];
  const segments: PathSegment[] = [];
  let node = value;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) {
      const index = Number(key);
      segments.push(index);
      node = node[index];
    } else {
      segments.push(key);
      node = isObject(node) ? node[key] : undefined;
    }
  }
  return segments;
}

function typeName(type: string): string {
  return (
    {
      integer: 'an integer',
      number: 'a number',
      string: 'a string',
      boolean: 'true or false',
      array: 'a list',
      object: 'a mapping',
      null: 'empty',
    }[type] ?? type
  );
}

function kindOf(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `the string ${show(value)}`;
  return `${typeof value} ${String(value)}`;
}

function show(value: unknown): string {
  if (typeof value === 'string') return `'${value.length > 40 ? `${value.slice(0, 40)}…` : value}'`;
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'object') return Array.isArray(value) ? 'a list' : 'a mapping';
  return String(value);
}

function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(word, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost));
    }
    previous = current;
  }
  return previous[b.length]!;
}

// ---------------------------------------------------------------------------------------------
// rules of one document that a schema cannot express

type Obj = Record<string, unknown>;

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
      if (
        options.expectedImage !== undefined &&
        typeof doc.image === 'string' &&
        doc.image !== options.expectedImage
      ) {
        out.push(
          problemAt(
            y,
            ['image'],
            `record belongs to image '${doc.image}' but is stored under images/${options.expectedImage}`,
          ),
        );
      }
      checkSizes(y, doc, [['provision', 'memory']], out, 'memory');
      for (const [id] of entries(path(doc, ['provision', 'disks']))) {
        checkSizes(y, doc, [['provision', 'disks', id, 'size']], out, 'disk');
      }
      break;
    case 'System':
      checkInterfaces(y, doc, out);
      break;
    case 'Plan':
      checkBoot(y, doc, new Set(list(doc.disks).map((d) => (isObject(d) ? d.id : undefined))), out);
      for (const [i, disk] of list(doc.disks).entries()) {
        if (
          isObject(disk) &&
          typeof disk.size === 'number' &&
          typeof disk.image_size === 'number' &&
          disk.size < disk.image_size
        ) {
          out.push(
            problemAt(
              y,
              ['disks', i, 'size'],
              `size ${disk.size} is smaller than image_size ${disk.image_size}`,
            ),
          );
        }
      }
      break;
    case 'ImageStore':
      break;
  }
  return out;
}

function checkImage(y: YamlFile, doc: Obj, out: Problem[]): void {
  const ids = new Map<string, number>();
  for (const [i, disk] of list(doc.disks).entries()) {
    if (!isObject(disk)) continue;
    if (typeof disk.id === 'string') {
      const first = ids.get(disk.id);
      if (first === undefined) ids.set(disk.id, i);
      else
        out.push(
          problemAt(y, ['disks', i, 'id'], `duplicate disk id '${disk.id}' (also disks[${first}])`),
        );
    }
    const hasContent = disk.blob === true || typeof disk.url === 'string';
    if (disk.use === 'scratch' && (hasContent || disk.sha256 !== undefined)) {
      out.push(
        problemAt(
          y,
          ['disks', i],
          'a scratch disk is created empty: it takes no sha256, blob or url',
        ),
      );
    } else if (hasContent && disk.sha256 === undefined) {
      const why = disk.blob === true ? 'blob: true' : 'url';
      out.push(
        problemAt(
          y,
          ['disks', i],
          `missing required key 'sha256' (a disk with ${why} needs its checksum)`,
        ),
      );
    }
    checkSizes(y, doc, [['disks', i, 'size']], out, 'disk');
  }
  checkBoot(y, doc, new Set(ids.keys()), out);
  checkSizes(y, doc, [['devices', 'memory']], out, 'memory');
  checkSizes(
    y,
    doc,
    [
      ['requires', 'min_memory'],
      ['requires', 'min_disk'],
    ],
    out,
  );
  for (const [name, parameter] of entries(doc?.parameters)) {
    if (!isObject(parameter)) continue;
    if (parameter.default !== undefined && parameter.computed !== undefined) {
      out.push(
        problemAt(
          y,
          ['parameters', name],
          `parameter '${name}' sets both default and computed; keep one`,
          { key: true },
        ),
      );
    }
    if (parameter.default !== undefined) {
      const wrong = typeMismatch(parameter.type, parameter.default, parameter.secret === true);
      if (wrong) out.push(problemAt(y, ['parameters', name, 'default'], wrong));
    }
  }
}

function checkBoot(y: YamlFile, doc: Obj, diskIds: Set<unknown>, out: Problem[]): void {
  const known = [...diskIds].filter((id) => typeof id === 'string').join(', ') || 'none';
  for (const [i, entry] of list(doc.boot).entries()) {
    if (!isObject(entry)) continue;
    const hasLoader = entry.loader !== undefined;
    const hasKernel = entry.kernel !== undefined;
    if (hasLoader && hasKernel) {
      out.push(problemAt(y, ['boot', i], 'set either loader or kernel, not both'));
    } else if (!hasLoader && !hasKernel) {
      out.push(
        problemAt(
          y,
          ['boot', i],
          "missing required key 'loader' or 'kernel' (how the guest boots)",
        ),
      );
    }
    for (const key of ['initrd', 'cmdline']) {
      if (entry[key] !== undefined && !hasKernel) {
        out.push(problemAt(y, ['boot', i, key], `${key} needs kernel`));
      }
    }
    const drives = list(entry.drives);
    if (hasLoader && !hasKernel && Array.isArray(entry.drives) && drives.length === 0) {
      out.push(
        problemAt(
          y,
          ['boot', i, 'drives'],
          `loader '${String(entry.loader)}' needs at least one drive`,
        ),
      );
    }
    const targets = new Map<string, number>();
    for (const [j, drive] of drives.entries()) {
      if (!isObject(drive)) continue;
      if (typeof drive.disk === 'string' && !diskIds.has(drive.disk)) {
        out.push(
          problemAt(
            y,
            ['boot', i, 'drives', j, 'disk'],
            `unknown disk '${drive.disk}' (disks: ${known})`,
          ),
        );
      }
      if (typeof drive.target === 'string') {
        const first = targets.get(drive.target);
        if (first === undefined) targets.set(drive.target, j);
        else {
          out.push(
            problemAt(
              y,
              ['boot', i, 'drives', j, 'target'],
              `duplicate target '${drive.target}' (also boot[${i}].drives[${first}])`,
            ),
          );
        }
      }
    }
  }
}

function checkInterfaces(y: YamlFile, doc: Obj, out: Problem[]): void {
  const names = new Map<string, number>();
  const macs = new Map<string, number>();
  for (const [i, nic] of list(doc.interfaces).entries()) {
    if (!isObject(nic)) continue;
    if (typeof nic.name === 'string') {
      const first = names.get(nic.name);
      if (first === undefined) names.set(nic.name, i);
      else
        out.push(
          problemAt(
            y,
            ['interfaces', i, 'name'],
            `duplicate interface '${nic.name}' (also interfaces[${first}])`,
          ),
        );
    }
    if (typeof nic.mac === 'string') {
      const mac = nic.mac.toLowerCase();
      const first = macs.get(mac);
      if (first === undefined) macs.set(mac, i);
      else
        out.push(
          problemAt(
            y,
            ['interfaces', i, 'mac'],
            `duplicate MAC ${mac} (also interfaces[${first}])`,
          ),
        );
    }
    if (nic.dhcp === true && nic.ip !== undefined) {
      out.push(problemAt(y, ['interfaces', i], 'set either dhcp: true or ip, not both'));
    }
    if (nic.ip === undefined && nic.gateway !== undefined) {
      out.push(problemAt(y, ['interfaces', i, 'gateway'], 'gateway needs a static ip'));
    }
  }
}

const SIZE_RE = new RegExp(SIZE_PATTERN);

/** Sizes the schema accepts but that are too large to be exact in bytes. */
function checkSizes(
  y: YamlFile,
  doc: Obj,
  paths: PathSegment[][],
  out: Problem[],
  kind: 'size' | 'memory' | 'disk' = 'size',
): void {
  for (const segments of paths) {
    const value = path(doc, segments);
    if (
      !(typeof value === 'number' && Number.isInteger(value) && value >= 0) &&
      !(typeof value === 'string' && SIZE_RE.test(value))
    ) {
      continue; // absent, or already reported by the schema
    }
    let bytes: number;
    try {
      bytes = parseSize(value);
    } catch {
      out.push(problemAt(y, segments, `size ${String(value)} is too large`));
      continue;
    }
    // A bare number is bytes: `memory: 512` is a unit forgotten, not a machine of 512 bytes.
    if (kind === 'memory' && bytes < MIN_MEMORY)
      out.push(
        problemAt(
          y,
          segments,
          typeof value === 'number' || /^\d+$/.test(value)
            ? `memory ${String(value)} is less than 1MiB (a number alone is bytes): give a unit, e.g. 512MiB`
            : `memory ${value} is less than 1MiB`,
        ),
      );
    if (kind === 'disk' && bytes === 0)
      out.push(problemAt(y, segments, 'a disk of size 0 holds nothing'));
  }
}

const MIN_MEMORY = 1024 * 1024;

/**
 * Why `value` does not fit a parameter of `type`, or undefined when it does; a secret's value
 * is not echoed.
 */
function typeMismatch(type: unknown, value: unknown, secret: boolean): string | undefined {
  const got = secret ? '<redacted>' : show(value);
  switch (type) {
    case 'integer':
      return Number.isInteger(value)
        ? undefined
        : `must be an integer (parameter type integer; got ${got})`;
    case 'boolean':
      return typeof value === 'boolean'
        ? undefined
        : `must be true or false (parameter type boolean; got ${got})`;
    case 'size':
      return (typeof value === 'number' && Number.isInteger(value) && value >= 0) ||
        (typeof value === 'string' && SIZE_RE.test(value))
        ? undefined
        : `${DEF_MESSAGES.size} (parameter type size; got ${got})`;
    case 'string':
      return value !== null && typeof value === 'object'
        ? `must be a single value (parameter type string; got ${got})`
        : undefined;
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// the whole store

interface ImageEntry {
  name: string;
  dir: string;
  yaml?: YamlFile;
  doc?: Obj;
  records: Map<string, { yaml: YamlFile; doc?: Obj }>;
}

interface SystemEntry {
  name: string;
  yaml: YamlFile;
  doc?: Obj;
}

const CONCURRENCY = 64;

/**
 * Validates the store at `storeDir` (every image, record and system, or only the named images
 * with their records and the systems that use them) and the references between documents.
 * An image named in `options.images` that does not exist is a NOT_FOUND error.
 */
export async function validateStore(
  storeDir: string,
  options: { images?: string[] } = {},
): Promise<StoreValidation> {
  const limit = createLimiter(CONCURRENCY);
  const problems: Problem[] = [];
  const missing = (file: string, message: string): Problem => ({
    file,
    line: 1,
    col: 1,
    path: '',
    message,
  });

  const [storeText, storeSets, imageDirs, systemFiles] = await Promise.all([
    limit(() => readOptional(join(storeDir, 'store.yaml'))),
    limit(() => listDir(join(storeDir, 'custom_scripts'))),
    limit(() => listDir(join(storeDir, 'images'))),
    limit(() => listDir(join(storeDir, 'systems'))),
  ]);
  if (storeText === undefined)
    problems.push(missing('store.yaml', 'missing store.yaml: this is not an image store'));
  else problems.push(...validateDocument('ImageStore', parseYaml('store.yaml', storeText)));
  const storeSetNames = new Set(storeSets.filter((d) => d.isDirectory()).map((d) => d.name));

  const allImages = imageDirs
    .filter((d) => d.isDirectory() && !d.name.startsWith('.'))
    .map((d) => d.name);
  let selected = allImages;
  if (options.images) {
    const present = new Set(allImages);
    for (const name of options.images) {
      if (!present.has(name)) {
        throw new ImgctlError('NOT_FOUND', `image '${name}' not found`, {
          hint: "'imgctl image list' shows the images",
        });
      }
    }
    selected = [...new Set(options.images)];
  }

  const images = await Promise.all(selected.map((name) => readImage(storeDir, name, limit)));
  const byName = new Map<string, ImageEntry>();
  let recordCount = 0;
  for (const image of images) {
    byName.set(image.name, image);
    const imageFile = `images/${image.name}/image.yaml`;
    if (!isValidName(image.name)) {
      problems.push(missing(`images/${image.name}`, `'${image.name}' is not a valid image name`));
      continue;
    }
    if (!image.yaml) {
      problems.push(missing(imageFile, `image directory images/${image.name} has no image.yaml`));
    } else {
      problems.push(...validateDocument('Image', image.yaml, { expectedName: image.name }));
    }
    for (const [recordName, record] of image.records) {
      recordCount++;
      problems.push(
        ...validateDocument('ImageRecord', record.yaml, {
          expectedName: recordName,
          expectedImage: image.name,
        }),
      );
      if (!record.doc) continue;
      if (!image.yaml) {
        problems.push(
          problemAt(
            record.yaml,
            ['image'],
            `record of a missing image: images/${image.name}/image.yaml does not exist`,
          ),
        );
        continue;
      }
      if (image.doc) {
        checkLayerParameters(
          record.yaml,
          ['provision', 'parameters'],
          record.doc,
          image,
          `record '${recordName}'`,
          problems,
        );
        checkRecordDisks(record.yaml, record.doc, image, problems);
      }
    }
  }
  await Promise.all(images.map((image) => checkImageFiles(image, storeSetNames, limit, problems)));

  const systems = await readSystems(storeDir, systemFiles, limit);
  const selectedSet = options.images ? new Set(selected) : undefined;
  const reported = selectedSet
    ? systems.filter((s) => typeof s.doc?.image === 'string' && selectedSet.has(s.doc.image))
    : systems;
  for (const system of reported) {
    problems.push(...validateDocument('System', system.yaml, { expectedName: system.name }));
    if (system.doc) checkSystemReferences(system, byName, problems);
  }
  checkSystemDuplicates(systems, new Set(reported), problems);

  return {
    problems: sortProblems(dedupe(problems)),
    counts: {
      images: images.filter((i) => i.yaml).length,
      records: recordCount,
      systems: reported.length,
    },
  };
}

async function readImage(storeDir: string, name: string, limit: Limiter): Promise<ImageEntry> {
  const dir = join(storeDir, 'images', name);
  const image: ImageEntry = { name, dir, records: new Map() };
  if (!isValidName(name)) return image;
  const entries = await limit(() => listDir(dir));
  const jobs: Promise<void>[] = [];
  if (entries.some((e) => e.name === 'image.yaml' && !e.isDirectory())) {
    jobs.push(
      limit(() => readOptional(join(dir, 'image.yaml'))).then((text) => {
        if (text === undefined) return; // removed while we read
        image.yaml = readYamlQuickly(`images/${name}/image.yaml`, text);
        if (isObject(image.yaml.value)) image.doc = image.yaml.value;
      }),
    );
  }
  if (entries.some((e) => e.name === 'records' && e.isDirectory())) {
    const files = (await limit(() => listDir(join(dir, 'records'))))
      .filter((e) => e.name.endsWith('.yaml') && !e.name.startsWith('.') && !e.isDirectory())
      .map((e) => e.name)
      .sort();
    for (const file of files) {
      jobs.push(
        limit(() => readFile(join(dir, 'records', file), 'utf8')).then((text) => {
          const yaml = readYamlQuickly(`images/${name}/records/${file}`, text);
          image.records.set(file.slice(0, -'.yaml'.length), {
            yaml,
            doc: isObject(yaml.value) ? yaml.value : undefined,
          });
        }),
      );
    }
  }
  await Promise.all(jobs);
  // keep records in file-name order whatever order the reads finished in
  image.records = new Map([...image.records].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return image;
}

async function readSystems(
  storeDir: string,
  files: Dirent[],
  limit: Limiter,
): Promise<SystemEntry[]> {
  const names = files
    .filter((e) => e.name.endsWith('.yaml') && !e.name.startsWith('.') && !e.isDirectory())
    .map((e) => e.name)
    .sort();
  return Promise.all(
    names.map(async (file) => {
      const text = await limit(() => readFile(join(storeDir, 'systems', file), 'utf8'));
      const yaml = readYamlQuickly(`systems/${file}`, text);
      return {
        name: file.slice(0, -'.yaml'.length),
        yaml,
        doc: isObject(yaml.value) ? yaml.value : undefined,
      };
    }),
  );
}

/** Parameters a record or system sets: declared by the image, customizable, not computed, of the right type. */
function checkLayerParameters(
  y: YamlFile,
  at: string[],
  doc: Obj,
  image: ImageEntry,
  layer: string,
  out: Problem[],
): void {
  const declared = isObject(image.doc?.parameters) ? image.doc.parameters : {};
  for (const [name, value] of entries(path(doc, at))) {
    const parameter = declared[name];
    const segments = [...at, name];
    if (!isObject(parameter)) {
      out.push(
        problemAt(y, segments, `parameter '${name}' is not declared by image '${image.name}'`, {
          key: true,
        }),
      );
    } else if (parameter.customizable === false) {
      out.push(
        problemAt(y, segments, `parameter '${name}' is not customizable (set by ${layer})`, {
          key: true,
        }),
      );
    } else if (parameter.computed !== undefined) {
      out.push(
        problemAt(y, segments, `parameter '${name}' is computed by the image (set by ${layer})`, {
          key: true,
        }),
      );
    } else {
      const wrong = typeMismatch(parameter.type, value, parameter.secret === true);
      if (wrong) out.push(problemAt(y, segments, wrong));
    }
  }
}

function checkRecordDisks(y: YamlFile, doc: Obj, image: ImageEntry, out: Problem[]): void {
  const disks = new Map<string, Obj>();
  for (const disk of list(image.doc?.disks)) {
    if (isObject(disk) && typeof disk.id === 'string') disks.set(disk.id, disk);
  }
  for (const [id, setting] of entries(path(doc, ['provision', 'disks']))) {
    const disk = disks.get(id);
    if (!disk) {
      const known = [...disks.keys()].join(', ') || 'none';
      out.push(
        problemAt(
          y,
          ['provision', 'disks', id],
          `unknown disk '${id}' (image '${image.name}' has disks: ${known})`,
          {
            key: true,
          },
        ),
      );
      continue;
    }
    const size = isObject(setting) ? sizeOrUndefined(setting.size) : undefined;
    const imageSize = sizeOrUndefined(disk.size);
    if (size !== undefined && imageSize !== undefined && size < imageSize) {
      out.push(
        problemAt(
          y,
          ['provision', 'disks', id, 'size'],
          `size ${String((setting as Obj).size)} is smaller than the image's disk '${id}' (${String(disk.size)}); disks can grow, not shrink`,
        ),
      );
    }
  }
}

/** Template errors in an image's computed parameters (includes, unknown filters, syntax). */
export function computedTemplateProblems(y: YamlFile): Problem[] {
  const out: Problem[] = [];
  for (const [name, parameter] of entries((y.value as Obj | null)?.parameters)) {
    const computed = isObject(parameter) ? parameter.computed : undefined;
    if (typeof computed !== 'string') continue;
    for (const p of checkTemplate(computed))
      out.push(problemAt(y, ['parameters', name, 'computed'], `template error: ${p.message}`));
  }
  return out;
}

/** The provisioning script, kickstart and custom script sets an image names exist. */
async function checkImageFiles(
  image: ImageEntry,
  storeSets: Set<string>,
  limit: Limiter,
  out: Problem[],
): Promise<void> {
  const doc = image.doc;
  const y = image.yaml;
  const provision = doc?.provision;
  if (!y || !isObject(provision)) return;
  for (const key of ['script', 'kickstart'] as const) {
    const file = provision[key];
    if (
      typeof file !== 'string' ||
      !/^[A-Za-z0-9._+/-]+$/.test(file) ||
      file.split('/').includes('..')
    )
      continue;
    if (!(await limit(() => isFile(join(image.dir, file))))) {
      out.push(problemAt(y, ['provision', key], `${file} does not exist in images/${image.name}/`));
    } else if (key === 'kickstart') {
      const source = await limit(() => readFile(join(image.dir, file), 'utf8'));
      for (const p of checkTemplate(source)) {
        out.push({
          file: `images/${image.name}/${file}`,
          line: p.line,
          col: p.col,
          path: '',
          message: p.message,
        });
      }
    }
  }
  out.push(...computedTemplateProblems(y));
  const sets = list(provision.custom_scripts);
  if (sets.length === 0) return;
  const own = new Set(
    (await limit(() => listDir(join(image.dir, 'custom_scripts'))))
      .filter((d) => d.isDirectory())
      .map((d) => d.name),
  );
  for (const [i, set] of sets.entries()) {
    if (typeof set === 'string' && !own.has(set) && !storeSets.has(set)) {
      out.push(
        problemAt(
          y,
          ['provision', 'custom_scripts', i],
          `custom script set '${set}' not found in images/${image.name}/custom_scripts/ or custom_scripts/`,
        ),
      );
    }
  }
}

function checkSystemReferences(
  system: SystemEntry,
  images: Map<string, ImageEntry>,
  out: Problem[],
): void {
  const doc = system.doc!;
  if (typeof doc.image !== 'string') return;
  const image = images.get(doc.image);
  if (!image?.yaml) {
    out.push(problemAt(system.yaml, ['image'], `image '${doc.image}' does not exist`));
    return;
  }
  if (typeof doc.record === 'string' && !image.records.has(doc.record)) {
    const known = [...image.records.keys()].join(', ') || 'none';
    out.push(
      problemAt(
        system.yaml,
        ['record'],
        `image '${doc.image}' has no record '${doc.record}' (records: ${known})`,
      ),
    );
  }
  if (image.doc)
    checkLayerParameters(system.yaml, ['parameters'], doc, image, `system '${system.name}'`, out);
}

/** Systems are found by MAC and hostname, so each must name one system only. */
function checkSystemDuplicates(
  systems: SystemEntry[],
  reported: Set<SystemEntry>,
  out: Problem[],
): void {
  const hostnames = new Map<string, SystemEntry>();
  const macs = new Map<string, SystemEntry>();
  for (const system of systems) {
    const doc = system.doc;
    if (!doc) continue;
    if (typeof doc.hostname === 'string') {
      const key = doc.hostname.toLowerCase();
      const first = hostnames.get(key);
      if (!first) hostnames.set(key, system);
      else if (reported.has(system)) {
        out.push(
          problemAt(
            system.yaml,
            ['hostname'],
            `hostname '${doc.hostname}' is also used by system '${first.name}'`,
          ),
        );
      }
    }
    for (const [i, nic] of list(doc.interfaces).entries()) {
      if (!isObject(nic) || typeof nic.mac !== 'string') continue;
      const key = nic.mac.toLowerCase();
      const first = macs.get(key);
      if (!first) macs.set(key, system);
      else if (first !== system && reported.has(system)) {
        out.push(
          problemAt(
            system.yaml,
            ['interfaces', i, 'mac'],
            `MAC ${key} is also used by system '${first.name}'`,
          ),
        );
      }
    }
  }
}

/**
 * A record or system about to be written, validated on its own and against the rest of the
 * store: its image exists, the record a system names exists, the parameters it sets are declared
 * and customizable, disks only grow, and (systems) no other system has its MAC or hostname.
 */
export async function checkOverlay(
  storeDir: string,
  kind: 'ImageRecord' | 'System',
  y: YamlFile,
  options: ValidateOptions = {},
): Promise<Problem[]> {
  const problems = validateDocument(kind, y, options);
  if (problems.length > 0 || !isObject(y.value)) return problems;
  const doc = y.value;
  const limit = createLimiter(CONCURRENCY);
  const imageName = doc.image;
  if (typeof imageName !== 'string') return problems;
  const image = await readImage(storeDir, imageName, limit);
  if (!image.yaml) {
    problems.push(problemAt(y, ['image'], `image '${imageName}' does not exist`));
  } else if (kind === 'ImageRecord') {
    checkLayerParameters(
      y,
      ['provision', 'parameters'],
      doc,
      image,
      `record '${String(doc.name)}'`,
      problems,
    );
    checkRecordDisks(y, doc, image, problems);
  } else {
    checkSystemReferences(
      { name: String(doc.name), yaml: y, doc },
      new Map([[imageName, image]]),
      problems,
    );
  }
  if (kind === 'System') {
    const files = (await limit(() => listDir(join(storeDir, 'systems')))).filter(
      (e) => e.name !== `${String(doc.name)}.yaml`,
    );
    const self: SystemEntry = { name: String(doc.name), yaml: y, doc };
    const others = await readSystems(storeDir, files, limit);
    checkSystemDuplicates([...others, self], new Set([self]), problems);
  }
  return sortProblems(dedupe(problems));
}

// ---------------------------------------------------------------------------------------------
// one document, for every read of the store

const NOT_FOUND_HINTS: Record<DocKind, string> = {
  ImageStore: "run 'imgctl init DIR', or pass --store DIR",
  Image: "'imgctl image list' shows the images",
  ImageRecord: "'imgctl record list IMAGE' shows the records of an image",
  System: "'imgctl system list' shows the systems",
  Plan: "'imgctl plan IMAGE' prints a plan",
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

// ---------------------------------------------------------------------------------------------
// helpers

function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function entries(value: unknown): [string, unknown][] {
  return isObject(value) ? Object.entries(value) : [];
}

function path(doc: unknown, segments: readonly PathSegment[]): unknown {
  let node = doc;
  for (const segment of segments) {
    if (Array.isArray(node) && typeof segment === 'number') node = node[segment];
    else if (isObject(node)) node = node[String(segment)];
    else return undefined;
  }
  return node;
}

function sizeOrUndefined(value: unknown): number | undefined {
  if (typeof value !== 'string' && typeof value !== 'number') return undefined;
  try {
    return parseSize(value);
  } catch {
    return undefined;
  }
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.file}\0${p.line}\0${p.col}\0${p.path}\0${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function sortProblems(problems: Problem[]): Problem[] {
  return problems.sort(
    (a, b) =>
      (a.file < b.file ? -1 : a.file > b.file ? 1 : 0) ||
      a.line - b.line ||
      a.col - b.col ||
      (a.message < b.message ? -1 : 1),
  );
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function listDir(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw error;
  }
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

type Limiter = <T>(task: () => Promise<T>) => Promise<T>;

/** Runs at most `max` tasks at once; only leaf I/O goes through it, so it cannot deadlock. */
function createLimiter(max: number): Limiter {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    // a finishing task hands its slot straight to the next waiting one
    if (running >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    else running++;
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}
