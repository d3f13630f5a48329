/**
 * The JSON Schemas of `schemas/`, compiled once, and their failures as located problems in the
 * words a person fixing the file needs.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import imageSchema from '../../../../schemas/image.schema.json' with { type: 'json' };
import recordSchema from '../../../../schemas/image-record.schema.json' with { type: 'json' };
import storeSchema from '../../../../schemas/image-store.schema.json' with { type: 'json' };
import planSchema from '../../../../schemas/plan.schema.json' with { type: 'json' };
import releaseSchema from '../../../../schemas/release.schema.json' with { type: 'json' };
import channelsSchema from '../../../../schemas/channels.schema.json' with { type: 'json' };
import ramdiskSchema from '../../../../schemas/ramdisk.schema.json' with { type: 'json' };
import systemSchema from '../../../../schemas/system.schema.json' with { type: 'json' };
import {
  formatPath,
  type PathSegment,
  type Problem,
  problemAt,
  type YamlFile,
} from '../yaml/document.ts';
import { isObject, show } from './values.ts';

export type DocKind =
  'ImageStore' | 'Image' | 'ImageRecord' | 'System' | 'Plan' | 'Release' | 'Channels' | 'Ramdisk';

const SCHEMAS: Record<DocKind, object> = {
  ImageStore: storeSchema,
  Image: imageSchema,
  ImageRecord: recordSchema,
  System: systemSchema,
  Plan: planSchema,
  Release: releaseSchema,
  Channels: channelsSchema,
  Ramdisk: ramdiskSchema,
};

/** Messages for the shared `$defs` of the schemas, used for any failure inside them. */
export const DEF_MESSAGES: Record<string, string> = {
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
  imageSpec:
    'must be an image reference: NAME, NAME@REVISION or NAME@CHANNEL, like web, web@3 or web@stable',
  url: 'must be an http://, https:// or file:// URL',
  httpUrl: 'must be an http:// or https:// URL',
  sshKey: "must be an OpenSSH public key line like 'ssh-ed25519 AAAA… user@host'",
  absPath: 'must be an absolute path like /dev/vda',
  sshAddress: 'must be [user@]host[:port], like root@192.0.2.10 or web1:2222',
  listen: 'must be [host:]port, like 0.0.0.0:8080',
  labelKey: "must be a label key of letters, digits, '.', '_', '/' and '-'",
  feature: 'must be a feature name of a-z, 0-9 and _, like acpi',
  channel: "must be a channel name: a letter, then a-z, 0-9, '.', '_' or '-', like stable",
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
      addFormats(ajvInstance, ['ipv4', 'ipv6', 'date-time']);
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

/** The problems the schema of `kind` finds in the parsed value of `y`. */
export function schemaProblems(kind: DocKind, y: YamlFile): Problem[] {
  const validate = validatorFor(kind);
  return validate(y.value) ? [] : locateErrors(y, validate.errors ?? []);
}

function locateErrors(y: YamlFile, errors: readonly ErrorObject[]): Problem[] {
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
    out.push(problemOfSchemaError(y, segments, error));
  }
  return out;
}

function problemOfSchemaError(y: YamlFile, segments: PathSegment[], error: ErrorObject): Problem {
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
