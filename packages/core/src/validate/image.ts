/**
 * The rules of an image that its schema cannot express, and the checks records and plans share
 * with it.
 */
import { type PathSegment, type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { parseSize, SIZE_PATTERN } from '../util/sizes.ts';
import { checkTemplate } from '../template/template.ts';
import { DEF_MESSAGES } from './schemas.ts';
import { entries, isObject, list, type Obj, path, show } from './values.ts';

/**
 * Duplicate disk ids, a disk's content without its checksum, boot drives, sizes and parameter
 * defaults.
 */
export function checkImage(y: YamlFile, doc: Obj, out: Problem[]): void {
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

/** Each boot entry boots one way, from disks `diskIds` names, each target once. */
export function checkBoot(y: YamlFile, doc: Obj, diskIds: Set<unknown>, out: Problem[]): void {
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

const SIZE_RE = new RegExp(SIZE_PATTERN);
const MIN_MEMORY = 1024 * 1024;

/**
 * Sizes the schema accepts but that cannot be meant: too large to be exact in bytes, a `memory`
 * under 1MiB, a `disk` of 0 bytes.
 */
export function checkSizes(
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

/**
 * Why `value` does not fit a parameter of `type`, or undefined when it does; a secret's value
 * is not echoed.
 */
export function typeMismatch(type: unknown, value: unknown, secret: boolean): string | undefined {
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
