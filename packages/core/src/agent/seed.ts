import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { stringifyYaml } from '../yaml/yaml-edit.ts';
import type { Interface, PlanDoc } from '../store/types.ts';
import type { ProcessRunner } from '../util/process.ts';

/** The three files of a cloud-init NoCloud seed. */
export interface SeedFiles {
  'meta-data': string;
  'user-data': string;
  'network-config': string;
}

export interface SeedOptions {
  instanceId: string;
  /** crypt(3) hashes by user name (e.g. from `openssl passwd -6`); plain passwords never enter a seed */
  passwordHashes?: Record<string, string>;
  /** shell commands run once at first boot, in order */
  commands?: string[];
  /** more top-level user-data keys (e.g. `imgctl:` for the tiny appliance); never overrides the others */
  extraUserData?: Record<string, unknown>;
}

/** The NoCloud seed that configures a machine of `plan`: identity, users and keys, network. */
export function renderSeed(plan: PlanDoc, options: SeedOptions): SeedFiles {
  const metaData = { 'instance-id': options.instanceId, 'local-hostname': plan.hostname };
  const keys = plan.ssh_authorized_keys;
  const hashes = options.passwordHashes ?? {};
  const users: Array<Record<string, unknown>> = [];
  const rootHash = hashes.root;
  if (keys.length > 0 || rootHash) {
    users.push({
      name: 'root',
      ...(keys.length > 0 ? { ssh_authorized_keys: keys } : {}),
      ...(rootHash ? { hashed_passwd: rootHash, lock_passwd: false } : {}),
    });
  }
  for (const [name, hash] of Object.entries(hashes)) {
    if (name !== 'root')
      users.push({ name, hashed_passwd: hash, lock_passwd: false, shell: '/bin/sh' });
  }
  const userData: Record<string, unknown> = {
    hostname: plan.hostname.split('.')[0],
    fqdn: plan.hostname,
    ...(users.length > 0 ? { users } : {}),
    ...(keys.length > 0 ? { ssh_authorized_keys: keys } : {}),
    ...(options.commands?.length ? { runcmd: options.commands } : {}),
  };
  for (const [key, value] of Object.entries(options.extraUserData ?? {}))
    if (!Object.hasOwn(userData, key)) userData[key] = value;
  return {
    'meta-data': stringifyYaml(metaData),
    'user-data': `#cloud-config\n${stringifyYaml(userData)}`,
    'network-config': stringifyYaml(networkConfig(plan.interfaces)),
  };
}

/** cloud-init network config version 2, one ethernet per interface, matched by MAC when known. */
function networkConfig(interfaces: Interface[]): Record<string, unknown> {
  const ethernets: Record<string, unknown> = {};
  for (const iface of interfaces) {
    const entry: Record<string, unknown> = {};
    if (iface.mac) {
      entry.match = { macaddress: iface.mac.toLowerCase() };
      entry['set-name'] = iface.name;
    }
    if (iface.ip) {
      entry.addresses = [iface.ip];
      if (iface.gateway)
        entry.routes = [{ to: iface.ip.includes(':') ? '::/0' : '0.0.0.0/0', via: iface.gateway }];
    } else {
      entry.dhcp4 = true;
    }
    if (iface.dns?.length) entry.nameservers = { addresses: iface.dns };
    ethernets[iface.name] = entry;
  }
  return { version: 2, ethernets };
}

/**
 * Writes the seed as an ISO 9660 image labelled `cidata` (what NoCloud looks for on a cdrom)
 * with genisoimage, through a temp name renamed into place.
 */
export async function writeSeedIso(
  files: SeedFiles,
  outFile: string,
  runner: ProcessRunner,
): Promise<void> {
  const staging = await mkdtemp(join(dirname(outFile), '.seed-'));
  try {
    const content = join(staging, 'content');
    await mkdir(content);
    for (const [name, text] of Object.entries(files))
      await writeFile(join(content, name), text, { mode: 0o600 });
    const tmpIso = join(staging, 'seed.iso');
    await runner.run('genisoimage', [
      '-quiet',
      '-output',
      tmpIso,
      '-volid',
      'cidata',
      '-joliet',
      '-rock',
      content,
    ]);
    await rename(tmpIso, outFile);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
