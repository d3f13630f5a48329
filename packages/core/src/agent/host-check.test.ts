import { describe, expect, it } from 'vitest';
import { checkHost, type HostCheckOptions, type HostProbe } from './host-check.ts';
import type { PlanDoc } from '../store/types.ts';

const GiB = 1024 ** 3;

const CAPS = `<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/>
<domain type='kvm'/></arch></guest></capabilities>`;

function probe(overrides: Partial<HostProbe> = {}): HostProbe {
  return {
    arch: () => 'x86_64',
    cpuCount: () => 2,
    memAvailable: async () => 8 * GiB,
    freeSpace: async () => ({ bytes: 100 * GiB, device: 1 }),
    kvmOpens: async () => true,
    virsh: async (_uri, args) =>
      args[0] === 'version'
        ? 'Running hypervisor: QEMU 7.2.0\n'
        : args[0] === 'capabilities'
          ? CAPS
          : 'Name: default\nActive:         yes\n',
    interfaceExists: async () => true,
    ...overrides,
  };
}

function plan(overrides: Partial<PlanDoc> = {}): PlanDoc {
  return {
    boot: [{ type: 'hvm', arch: 'x86_64', drives: [] }],
    devices: { vcpus: 1, memory: 256 * 1024 ** 2, nics: [], graphics: 'none', console: 'serial' },
    disks: [],
    ...overrides,
  } as unknown as PlanDoc;
}

const options: HostCheckOptions = {
  connect: 'qemu:///system',
  virtType: 'auto',
  virtPath: '/var/lib/libvirt/images',
  virtPathBytes: GiB,
  cacheDir: '/var/lib/imgctl/cache',
  cacheBytes: GiB,
};

describe('checkHost', () => {
  it('accepts a host that can run the plan, choosing kvm when it works', async () => {
    const result = await checkHost(plan(), options, probe());
    expect(result).toMatchObject({ ok: true, reasons: [], virtType: 'kvm' });
    expect(result.boot?.arch).toBe('x86_64');
  });

  it('auto chooses qemu when /dev/kvm does not open, or libvirt offers no kvm', async () => {
    expect(
      (await checkHost(plan(), options, probe({ kvmOpens: async () => false }))).virtType,
    ).toBe('qemu');
    const noKvm = probe({
      virsh: async (_u, args) =>
        args[0] === 'capabilities' ? CAPS.replace(/<domain type='kvm'\/>/, '') : '',
    });
    expect((await checkHost(plan(), options, noKvm)).virtType).toBe('qemu');
  });

  it('lists every reason at once: cpus, memory, space, kvm, the network', async () => {
    const result = await checkHost(
      plan({
        devices: {
          vcpus: 4,
          memory: 64 * GiB,
          nics: [{ model: 'virtio', network: 'default' }],
          graphics: 'none',
          console: 'serial',
        },
      }),
      { ...options, virtType: 'kvm' },
      probe({
        kvmOpens: async () => false,
        freeSpace: async () => ({ bytes: 1024 ** 2, device: 1 }),
        virsh: async (_u, args) => {
          if (args[0] === 'net-info') throw new Error('network not found');
          return args[0] === 'capabilities' ? CAPS : '';
        },
      }),
    );
    expect(result.ok).toBe(false);
    expect(result.reasons).toEqual([
      '--virt-type kvm: /dev/kvm cannot be opened (use --virt-type qemu for software emulation)',
      'the VM needs 4 vCPUs and this host has 2',
      'the VM needs 64GiB of memory and 8GiB is available (MemAvailable)',
      '--virt-path /var/lib/libvirt/images: 1MiB free, 2GiB needed (disks and downloads)',
      "libvirt network 'default' is not defined at qemu:///system (give --virt-bridge BR, or define the network)",
    ]);
  });

  it('says when the hypervisor is unreachable, and when no boot entry fits', async () => {
    const result = await checkHost(
      plan({ boot: [{ type: 'hvm', arch: 'aarch64', drives: [] }] }),
      options,
      probe({
        virsh: async () => {
          throw new Error('failed to connect to the hypervisor');
        },
      }),
    );
    expect(result.reasons).toEqual([
      'the hypervisor at qemu:///system is not reachable: failed to connect to the hypervisor',
      'no boot entry of the image runs here: it offers hvm/aarch64, this host is x86_64',
    ]);
  });

  it('checks the cache filesystem separately when it is another one', async () => {
    const result = await checkHost(
      plan(),
      options,
      probe({
        freeSpace: async (path) =>
          path.startsWith('/var/lib/imgctl')
            ? { bytes: 0, device: 2 }
            : { bytes: 100 * GiB, device: 1 },
      }),
    );
    expect(result.reasons).toEqual([
      '--cache-dir /var/lib/imgctl/cache: 0 free, 1GiB needed for the downloads',
    ]);
  });

  it('honours requires: min_memory and the hypervisors the image runs on', async () => {
    const result = await checkHost(
      plan({ requires: { min_memory: '16GiB', hypervisors: ['kvm'] } }),
      options,
      probe({ kvmOpens: async () => false }),
    );
    expect(result.reasons).toEqual([
      'the image runs on kvm, and this host would use qemu',
      'the VM needs 16GiB of memory and 8GiB is available (MemAvailable)',
    ]);
  });

  it('needs the bridge given with --virt-bridge to exist', async () => {
    const result = await checkHost(
      plan({
        devices: {
          vcpus: 1,
          memory: 1,
          nics: [{ model: 'virtio' }],
          graphics: 'none',
          console: 'serial',
        },
      }),
      { ...options, bridge: 'br9' },
      probe({ interfaceExists: async () => false }),
    );
    expect(result.reasons).toEqual(['--virt-bridge br9: no such network interface on this host']);
  });
});
