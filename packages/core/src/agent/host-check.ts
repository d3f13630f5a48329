/**
 * Can this host run a plan as a libvirt VM? Every reason it cannot is collected (docs/agent.md
 * #host-check), so a sysadmin fixes them all at once; the agent exits 6 (HOST) with the list.
 */
import { constants } from 'node:fs';
import { access, open, readFile, stat, statfs } from 'node:fs/promises';
import { arch as nodeArch, cpus, freemem } from 'node:os';
import { dirname } from 'node:path';
import { formatSize, parseSize } from '../util/sizes.ts';
import type { BootEntry, PlanDoc } from '../store/types.ts';

export type VirtType = 'kvm' | 'qemu';

/** What the check asks the host; `systemProbe` is the real one, tests pass fakes. */
export interface HostProbe {
  /** the machine architecture as uname -m says it (x86_64, aarch64, …) */
  arch(): string;
  cpuCount(): number;
  /** bytes of memory available to new processes (MemAvailable) */
  memAvailable(): Promise<number>;
  /**
   * free bytes for unprivileged writes on the filesystem holding `path` (or its nearest
   * existing parent), and that filesystem's device number
   */
  freeSpace(path: string): Promise<{ bytes: number; device: number }>;
  /** true when /dev/kvm opens read-write */
  kvmOpens(): Promise<boolean>;
  /** `virsh --connect URI ARGS`; rejects with the error text when virsh fails */
  virsh(uri: string, args: string[]): Promise<string>;
  /** true when a host network interface (a bridge) of this name exists */
  interfaceExists(name: string): Promise<boolean>;
}

export interface HostCheckOptions {
  connect: string;
  virtType: VirtType | 'auto';
  virtPath: string;
  /** bytes the per-VM disks and seed will take at virtPath */
  virtPathBytes: number;
  cacheDir: string;
  /** bytes still to download into cacheDir */
  cacheBytes: number;
  /** every nic goes on this bridge instead of the plan's network */
  bridge?: string;
}

export interface HostCheckResult {
  ok: boolean;
  reasons: string[];
  virtType: VirtType;
  /** the first boot entry this host can run (undefined when none) */
  boot?: BootEntry;
  facts: {
    arch: string;
    cpus: number;
    memAvailable: number;
    freeAtVirtPath: number;
    freeAtCache: number;
    domainTypes: string[];
    hypervisor?: string;
  };
}

/** uname -m names, and the node names for them. */
const NODE_ARCH: Record<string, string> = {
  x64: 'x86_64',
  arm64: 'aarch64',
  ia32: 'i686',
  ppc64: 'ppc64le',
  s390x: 's390x',
};

/** Guest architectures a host architecture runs natively (kvm) */
function nativeArches(hostArch: string): string[] {
  if (hostArch === 'x86_64') return ['x86_64', 'i686', 'i386'];
  if (hostArch === 'aarch64') return ['aarch64', 'armv7l'];
  return [hostArch];
}

/** Runs the checks; never throws for a host problem (those are reasons). */
export async function checkHost(
  plan: PlanDoc,
  options: HostCheckOptions,
  probe: HostProbe,
): Promise<HostCheckResult> {
  const reasons: string[] = [];
  const hostArch = probe.arch();
  const cpuCount = probe.cpuCount();

  // The hypervisor: reachable, and which domain types it offers for which guest arches.
  let capabilities = '';
  let hypervisor: string | undefined;
  try {
    hypervisor = firstLine(await probe.virsh(options.connect, ['version']), 'Running hypervisor');
    capabilities = await probe.virsh(options.connect, ['capabilities']);
  } catch (error) {
    reasons.push(
      `the hypervisor at ${options.connect} is not reachable: ${oneLine(String((error as Error).message ?? error))}`,
    );
  }
  const guests = parseGuests(capabilities);
  const domainTypes = [...new Set(guests.flatMap((g) => g.domainTypes))];

  // The boot entry: the first whose arch the hypervisor (or, unreachable, this host) runs.
  const runsArch = (arch: string) =>
    guests.length > 0
      ? guests.some((g) => g.arch === arch && g.osType === 'hvm')
      : nativeArches(hostArch).includes(arch);
  const boot = plan.boot.find((b) => b.type === 'hvm' && runsArch(b.arch));
  if (!boot) {
    reasons.push(
      `no boot entry of the image runs here: it offers ${plan.boot.map((b) => `${b.type}/${b.arch}`).join(', ') || 'none'}, this host is ${hostArch}`,
    );
  }

  // The domain type: kvm only when asked for (or auto) and both /dev/kvm and libvirt offer it.
  const kvmOpens = await probe.kvmOpens();
  const archOf = boot?.arch ?? hostArch;
  const kvmOffered = guests.some((g) => g.arch === archOf && g.domainTypes.includes('kvm'));
  const kvmWorks = kvmOpens && kvmOffered && nativeArches(hostArch).includes(archOf);
  let virtType: VirtType;
  if (options.virtType === 'auto') {
    virtType = kvmWorks ? 'kvm' : 'qemu';
  } else {
    virtType = options.virtType;
    if (virtType === 'kvm' && !kvmWorks && capabilities !== '') {
      const why = !kvmOpens
        ? '/dev/kvm cannot be opened'
        : !kvmOffered
          ? `libvirt offers no kvm domains for ${archOf}`
          : `${archOf} guests do not run natively on ${hostArch}`;
      reasons.push(`--virt-type kvm: ${why} (use --virt-type qemu for software emulation)`);
    }
  }
  if (
    virtType === 'qemu' &&
    capabilities !== '' &&
    boot &&
    !guests.some((g) => g.arch === archOf && g.domainTypes.includes('qemu'))
  ) {
    reasons.push(`libvirt at ${options.connect} offers no qemu (emulated) domains for ${archOf}`);
  }
  const hypervisors = plan.requires?.hypervisors;
  if (hypervisors && !hypervisors.includes(virtType)) {
    reasons.push(
      `the image runs on ${hypervisors.join(' or ')}, and this host would use ${virtType}`,
    );
  }

  // CPUs and memory.
  if (plan.devices.vcpus > cpuCount) {
    reasons.push(`the VM needs ${plan.devices.vcpus} vCPUs and this host has ${cpuCount}`);
  }
  const memAvailable = await probe.memAvailable();
  const minMemory = plan.requires?.min_memory ? parseSize(plan.requires.min_memory) : 0;
  const memoryNeeded = Math.max(plan.devices.memory, minMemory);
  if (memoryNeeded > memAvailable) {
    reasons.push(
      `the VM needs ${formatSize(memoryNeeded)} of memory and ${formatSize(memAvailable)} is available (MemAvailable)`,
    );
  }

  // Space: the per-VM disks at --virt-path, the downloads in the cache (the same filesystem
  // counts both).
  const minDisk = plan.requires?.min_disk ? parseSize(plan.requires.min_disk) : 0;
  const virtNeeded = Math.max(options.virtPathBytes, minDisk);
  const virtFs = await probe.freeSpace(options.virtPath);
  const cacheFs = await probe.freeSpace(options.cacheDir);
  const freeAtVirtPath = virtFs.bytes;
  const freeAtCache = cacheFs.bytes;
  const sameFs = virtFs.device === cacheFs.device;
  const virtTotal = virtNeeded + (sameFs ? options.cacheBytes : 0);
  if (virtTotal > freeAtVirtPath) {
    reasons.push(
      `--virt-path ${options.virtPath}: ${formatSize(freeAtVirtPath)} free, ${formatSize(virtTotal)} needed${sameFs && options.cacheBytes > 0 ? ' (disks and downloads)' : ''}`,
    );
  }
  if (!sameFs && options.cacheBytes > freeAtCache) {
    reasons.push(
      `--cache-dir ${options.cacheDir}: ${formatSize(freeAtCache)} free, ${formatSize(options.cacheBytes)} needed for the downloads`,
    );
  }

  // Networks: a bridge must exist; a libvirt network must be defined and active.
  if (capabilities !== '') {
    if (options.bridge !== undefined) {
      if (plan.devices.nics.length > 0 && !(await probe.interfaceExists(options.bridge)))
        reasons.push(`--virt-bridge ${options.bridge}: no such network interface on this host`);
    } else {
      for (const nic of plan.devices.nics) {
        if (nic.bridge !== undefined) {
          if (!(await probe.interfaceExists(nic.bridge)))
            reasons.push(`bridge '${nic.bridge}' of the plan does not exist on this host`);
          continue;
        }
        const network = nic.network ?? 'default';
        try {
          const info = await probe.virsh(options.connect, ['net-info', network]);
          if (!/^Active:\s+yes/m.test(info))
            reasons.push(`libvirt network '${network}' is not active (virsh net-start ${network})`);
        } catch {
          reasons.push(
            `libvirt network '${network}' is not defined at ${options.connect} (give --virt-bridge BR, or define the network)`,
          );
        }
      }
    }
  }

  return {
    ok: reasons.length === 0,
    reasons: [...new Set(reasons)],
    virtType,
    boot,
    facts: {
      arch: hostArch,
      cpus: cpuCount,
      memAvailable,
      freeAtVirtPath,
      freeAtCache,
      domainTypes,
      hypervisor,
    },
  };
}

interface Guest {
  osType: string;
  arch: string;
  domainTypes: string[];
}

/** The <guest> entries of `virsh capabilities`: os type, arch and the domain types offered. */
function parseGuests(xml: string): Guest[] {
  const guests: Guest[] = [];
  for (const m of xml.matchAll(/<guest>([\s\S]*?)<\/guest>/g)) {
    const body = m[1]!;
    const osType = /<os_type>([^<]+)<\/os_type>/.exec(body)?.[1] ?? '';
    const arch = /<arch name=['"]([^'"]+)['"]/.exec(body)?.[1] ?? '';
    const domainTypes = [...body.matchAll(/<domain type=['"]([^'"]+)['"]/g)].map((d) => d[1]!);
    guests.push({ osType, arch, domainTypes });
  }
  return guests;
}

function firstLine(text: string, prefix: string): string | undefined {
  return text
    .split('\n')
    .find((l) => l.startsWith(prefix))
    ?.slice(prefix.length)
    .replace(/^:\s*/, '')
    .trim();
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim().slice(0, 500);
}

/** The real host: os, /proc/meminfo, statfs, /dev/kvm, and virsh through `run`. */
export function systemProbe(
  run: (file: string, args: string[]) => Promise<{ stdout: string }>,
): HostProbe {
  return {
    arch: () => NODE_ARCH[nodeArch()] ?? nodeArch(),
    cpuCount: () => cpus().length,
    async memAvailable() {
      const meminfo = await readFile('/proc/meminfo', 'utf8').catch(() => '');
      const kib = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo)?.[1];
      return kib === undefined ? freemem() : Number(kib) * 1024;
    },
    async freeSpace(path) {
      let dir = path;
      for (;;) {
        try {
          const fs = await statfs(dir);
          return { bytes: fs.bavail * fs.bsize, device: (await stat(dir)).dev };
        } catch (error) {
          const parent = dirname(dir);
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === dir) throw error;
          dir = parent;
        }
      }
    },
    async kvmOpens() {
      try {
        await access('/dev/kvm', constants.R_OK | constants.W_OK);
        const handle = await open('/dev/kvm', 'r+');
        await handle.close();
        return true;
      } catch {
        return false;
      }
    },
    async virsh(uri, args) {
      return (await run('virsh', ['--connect', uri, ...args])).stdout;
    },
    async interfaceExists(name) {
      if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(name)) return false;
      try {
        await access(`/sys/class/net/${name}`);
        return true;
      } catch {
        return false;
      }
    },
  };
}
