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

/**
 * The NoCloud seed that configures a machine of `plan`: identity, users and keys, network.
 *
 * Users: root gets the system's keys — `disable_root: false`, or Debian's and Ubuntu's
 * cloud-init would turn root's key into a "login as the default user" message — and its
 * password hash when `root_password` is set. Each `login_password_<user>` user is created with
 * its hash and the same keys, without sudo. The image's default user (`debian`, `ubuntu`…)
 * is not created: `users:` does not name it.
 */
export function renderSeed(plan: PlanDoc, options: SeedOptions): SeedFiles {
  const metaData = { 'instance-id': options.instanceId, 'local-hostname': plan.hostname };
  const keys = plan.ssh_authorized_keys;
  // a new list each time: the same one twice would be written as a YAML alias
  const withKeys = () => (keys.length > 0 ? { ssh_authorized_keys: [...keys] } : {});
  const users: Array<Record<string, unknown>> = [];
  for (const [name, hash] of Object.entries(options.passwordHashes ?? {})) {
    const login = { hashed_passwd: hash, lock_passwd: false };
    users.push(
      name === 'root' ? { name, ...login } : { name, ...login, shell: '/bin/sh', ...withKeys() },
    );
  }
  const userData: Record<string, unknown> = {
    hostname: plan.hostname.split('.')[0],
    fqdn: plan.hostname,
    // cloud-init would else set the hostname without its domain in /etc/hosts
    manage_etc_hosts: true,
    // the root user's keys, and root may use them
    ...withKeys(),
    disable_root: false,
    // `users:` without `default`: no image default user; an empty list still means that
    users,
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

/**
 * cloud-init network config version 1 (its own format, rendered alike by every renderer: ENI,
 * netplan, networkd, sysconfig), one physical interface per system interface, renamed to its
 * name by MAC when known. The gateway is the subnet's `gateway`: version 2's `routes` to
 * 0.0.0.0/0 become `post-up route add` lines under ENI (Debian's ifupdown), which need net-tools
 * and left Debian 12 without a default route.
 */
function networkConfig(interfaces: Interface[]): Record<string, unknown> {
  const config = interfaces.map((iface) => {
    const dns = iface.dns?.length ? { dns_nameservers: [...iface.dns] } : {};
    const subnet = iface.ip
      ? {
          type: iface.ip.includes(':') ? 'static6' : 'static',
          address: iface.ip,
          ...(iface.gateway ? { gateway: iface.gateway } : {}),
          ...dns,
        }
      : { type: 'dhcp', ...dns };
    return {
      type: 'physical',
      name: iface.name,
      ...(iface.mac ? { mac_address: iface.mac.toLowerCase() } : {}),
      subnets: [subnet],
    };
  });
  return { version: 1, config };
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
