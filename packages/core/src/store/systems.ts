import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAssignment } from './assign.ts';
import { parseYaml, writeFileAtomic } from '../yaml/document.ts';
import { type EditResult, editDocument, invalid } from './edit.ts';
import { ImgctlError } from '../util/errors.ts';
import { withStoreLock } from './lock.ts';
import { assertName, isValidName, printable } from '../util/names.ts';
import { parseYamlValue } from '../yaml/quick-yaml.ts';
import { exists, listNames, mapLimit, storePaths } from './store.ts';
import type { Interface, SystemDoc } from './types.ts';
import { checkOverlay } from '../validate/cross.ts';
import { loadDocument } from '../validate/load.ts';
import { stringifyYaml } from '../yaml/yaml-edit.ts';

export interface SystemInput {
  hostname?: string;
  image: string;
  record?: string;
  description?: string;
  address?: string;
  /** NAME[,mac=MAC][,ip=IP/PREFIX][,gateway=IP][,dns=IP;IP][,bridge=BR][,network=NET][,dhcp] */
  interfaces?: string[];
  sshKeys?: string[];
  params?: string[];
  targetDisk?: string;
}

export interface SystemRef {
  system: string;
  file: string;
}

/** Adds systems/<name>.yaml, checked against its image and record before it is written. */
export async function addSystem(
  storeDir: string,
  name: string,
  input: SystemInput,
): Promise<SystemRef> {
  assertName('system', name);
  const display = storePaths.rel.systemFile(name);
  const doc: Record<string, unknown> = {
    apiVersion: 'imgctl/v1',
    kind: 'System',
    name,
    hostname: input.hostname ?? name,
    image: input.image,
    record: input.record ?? 'default',
  };
  if (input.description !== undefined) doc.description = input.description;
  if (input.address !== undefined) doc.address = input.address;
  const interfaces = (input.interfaces ?? []).map(parseInterface);
  if (interfaces.length > 0) doc.interfaces = interfaces;
  if (input.sshKeys?.length) doc.ssh_authorized_keys = input.sshKeys;
  if (input.params?.length) {
    doc.parameters = Object.fromEntries(
      input.params.map((p) => {
        const a = parseAssignment(p);
        return [a.path.join('.'), a.value];
      }),
    );
  }
  if (input.targetDisk !== undefined) doc.target_disk = input.targetDisk;
  const text = stringifyYaml(doc);
  const file = storePaths.systemFile(storeDir, name);
  await withStoreLock(storeDir, async () => {
    if (await exists(file)) {
      throw new ImgctlError('CONFLICT', `system '${name}' already exists`, {
        hint: `change it with 'imgctl system set ${name} PATH=VALUE'`,
      });
    }
    const problems = await checkOverlay(storeDir, 'System', parseYaml(display, text), {
      expectedName: name,
    });
    if (problems.length > 0) throw invalid(display, problems);
    await writeFileAtomic(file, text);
  });
  return { system: name, file: display };
}

/** `eth0,mac=52:54:00:aa:bb:cc,ip=192.0.2.10/24,gateway=192.0.2.1,dns=192.0.2.53;192.0.2.54` */
function parseInterface(spec: string): Interface {
  const [name, ...fields] = spec.split(',');
  const iface: Interface = { name: name ?? '' };
  for (const field of fields) {
    const eq = field.indexOf('=');
    const key = eq < 0 ? field : field.slice(0, eq);
    const value = eq < 0 ? '' : field.slice(eq + 1);
    switch (key) {
      case 'mac':
        iface.mac = value.toLowerCase();
        break;
      case 'ip':
        iface.ip = value;
        break;
      case 'gateway':
        iface.gateway = value;
        break;
      case 'dns':
        iface.dns = value.split(';').filter(Boolean);
        break;
      case 'bridge':
        iface.bridge = value;
        break;
      case 'network':
        iface.network = value;
        break;
      case 'dhcp':
        iface.dhcp = true;
        break;
      default:
        throw new ImgctlError(
          'USAGE',
          `unknown interface field '${printable(key)}' in '${printable(spec)}'`,
          {
            hint: 'use NAME,mac=MAC,ip=IP/PREFIX,gateway=IP,dns=IP;IP,bridge=BR,network=NET,dhcp',
          },
        );
    }
  }
  return iface;
}

export interface SystemSummary {
  name: string;
  hostname: string | null;
  image: string | null;
  record: string | null;
  macs: string[];
}

async function readSystemLeniently(storeDir: string, name: string): Promise<Partial<SystemDoc>> {
  try {
    return (
      (parseYamlValue(
        await readFile(join(storePaths.systemsDir(storeDir), `${name}.yaml`), 'utf8'),
      ) as Partial<SystemDoc>) ?? {}
    );
  } catch {
    return {};
  }
}

export async function listSystems(storeDir: string): Promise<SystemSummary[]> {
  const names = await listNames(storePaths.systemsDir(storeDir), 'yamlFiles');
  return mapLimit(names, 64, async (name) => {
    const doc = await readSystemLeniently(storeDir, name);
    return {
      name,
      hostname: typeof doc.hostname === 'string' ? doc.hostname : null,
      image: typeof doc.image === 'string' ? doc.image : null,
      record: typeof doc.record === 'string' ? doc.record : null,
      macs: Array.isArray(doc.interfaces)
        ? doc.interfaces.flatMap((i) => (i?.mac ? [i.mac.toLowerCase()] : []))
        : [],
    };
  });
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** The system named `key`, or the one with that MAC address, or that hostname. */
export async function findSystem(storeDir: string, key: string): Promise<SystemDoc> {
  if (isValidName(key) && (await exists(storePaths.systemFile(storeDir, key))))
    return showSystem(storeDir, key);
  const all = await listSystems(storeDir);
  const lower = key.toLowerCase();
  const matches = MAC.test(key)
    ? all.filter((s) => s.macs.includes(lower))
    : all.filter(
        (s) =>
          s.hostname?.toLowerCase() === lower || s.hostname?.toLowerCase().split('.')[0] === lower,
      );
  if (matches.length === 1) return showSystem(storeDir, matches[0]!.name);
  if (matches.length > 1) {
    throw new ImgctlError(
      'CONFLICT',
      `'${printable(key)}' matches ${matches.length} systems: ${matches.map((m) => m.name).join(', ')}`,
      {
        hint: 'name the system instead',
      },
    );
  }
  throw new ImgctlError(
    'NOT_FOUND',
    `no system named '${printable(key)}' or with that MAC address or hostname`,
    {
      hint: "see 'imgctl system list'",
    },
  );
}

export async function showSystem(storeDir: string, name: string): Promise<SystemDoc> {
  const { value } = await loadDocument<SystemDoc>(
    'System',
    storePaths.systemFile(storeDir, name),
    storePaths.rel.systemFile(name),
    {
      expectedName: name,
    },
  );
  return value;
}

export async function setSystem(
  storeDir: string,
  name: string,
  assignments: string[],
): Promise<EditResult> {
  return editDocument({
    storeDir,
    kind: 'System',
    absPath: storePaths.systemFile(storeDir, name),
    display: storePaths.rel.systemFile(name),
    assignments,
    validate: { expectedName: name },
    check: (y) => checkOverlay(storeDir, 'System', y, { expectedName: name }),
  });
}

export async function removeSystem(
  storeDir: string,
  name: string,
): Promise<SystemRef & { removed: boolean }> {
  const file = storePaths.systemFile(storeDir, name);
  return withStoreLock(storeDir, async () => {
    if (!(await exists(file)))
      throw new ImgctlError('NOT_FOUND', `system '${name}' does not exist`, {
        hint: "see 'imgctl system list'",
      });
    await rm(file);
    return { system: name, file: storePaths.rel.systemFile(name), removed: true };
  });
}
