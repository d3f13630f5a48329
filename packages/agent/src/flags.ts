import { ImgctlError } from '@imgctl/core/util/errors';
import { isValidName } from '@imgctl/core/util/names';
import { parseImageRef } from '@imgctl/core/store/releases';
import { parseSize } from '@imgctl/core/util/sizes';

/** imgagent's options as commander parses them (main.ts declares them). */
export interface Flags {
  server?: string;
  list?: string;
  display?: boolean;
  virt?: boolean;
  replaceSelf?: boolean;
  image?: string;
  record?: string;
  system?: string;
  virtName?: string;
  virtPath: string;
  virtType: 'kvm' | 'qemu' | 'auto';
  connect: string;
  virtBridge?: string;
  nogfx?: boolean;
  start: boolean;
  autostart?: boolean;
  set: string[];
  dryRun?: boolean;
  printXml?: boolean;
  token?: string;
  tokenFile?: string;
  trust?: string;
  cacheDir: string;
  cacheLimit?: string;
  blobMirror: string[];
  registryAuth?: string;
  registryCa?: string;
  insecureHttp?: boolean;
  logDir: string;
  json?: boolean;
  force?: boolean;
  keepOnFailure?: boolean;
  targetDisk?: string;
  dataDisk: string[];
  reboot?: boolean;
  kexec?: boolean;
  update?: boolean;
  rollback?: boolean;
  follow?: string;
  viaRamdisk?: boolean;
  shutdownTimeout: string;
  healthTimeout?: string;
  progress?: boolean;
}

/**
 * Refuses an image reference, record or VM name that is not valid, before anything is
 * contacted.
 */
export function checkNames(flags: Flags): void {
  for (const [flag, value] of [
    ['--image', flags.image],
    ['--follow', flags.follow],
  ] as const) {
    if (value === undefined) continue;
    try {
      parseImageRef(value);
    } catch (error) {
      const e = error as ImgctlError;
      throw new ImgctlError('USAGE', `${flag}: ${e.message}`, {
        hint: 'an image is NAME, NAME@REVISION (a release) or NAME@CHANNEL; names are [a-z0-9][a-z0-9._-]{0,62}',
      });
    }
  }
  for (const [flag, value] of [
    ['--record', flags.record],
    ['--virt-name', flags.virtName],
  ] as const) {
    if (value !== undefined && !isValidName(value))
      throw new ImgctlError('USAGE', `${flag}: invalid name '${value.slice(0, 80)}'`, {
        hint: 'names are [a-z0-9][a-z0-9._-]{0,62}',
      });
  }
}

/** $IMGAGENT_SETS: a JSON array of NAME=VALUE, as imgctl provision sends --set (on stdin). */
export function setsFromEnv(value: string | undefined): string[] {
  if (value === undefined || value === '') return [];
  let sets: unknown;
  try {
    sets = JSON.parse(value);
  } catch {
    sets = undefined;
  }
  if (!Array.isArray(sets) || !sets.every((s) => typeof s === 'string'))
    throw new ImgctlError('USAGE', 'IMGAGENT_SETS must be a JSON array of NAME=VALUE strings');
  return sets as string[];
}

/** What the server resolves a plan from. */
export function planQuery(flags: Flags) {
  return {
    image: flags.image,
    record: flags.record,
    system: flags.system,
    vmName: flags.virtName,
    sets: flags.set,
  };
}

export function sizeFlag(flag: string, value: string): number {
  try {
    return parseSize(value);
  } catch {
    throw new ImgctlError('USAGE', `${flag}: not a size: '${value}'`, { hint: 'e.g. 20GiB' });
  }
}

/** Where a VM host keeps things and how it reaches libvirt: what --virt and --update share. */
export function virtHostFlags(flags: Flags, abs: (path: string) => string) {
  return {
    cacheDir: abs(flags.cacheDir),
    cacheLimit:
      flags.cacheLimit === undefined ? undefined : sizeFlag('--cache-limit', flags.cacheLimit),
    logDir: abs(flags.logDir),
    connect: flags.connect,
    virtType: flags.virtType,
    bridge: flags.virtBridge,
    nogfx: flags.nogfx,
  };
}
