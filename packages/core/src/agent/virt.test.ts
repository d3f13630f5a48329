import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import type { HostProbe } from './host-check.ts';
import type { PlanDoc } from '../store/types.ts';
import type { ProcessRunner } from '../util/process.ts';
import { renderConfig } from './steps.ts';
import { planFingerprint, provisionVirt, type VirtDeps, type VirtOptions } from './virt.ts';
import { type UpdateOptions, updateVirt } from './vm-update.ts';

const ROOT = '1'.repeat(64);
const DATA = '2'.repeat(64);

const PLAN = {
  apiVersion: 'imgctl/v1',
  kind: 'Plan',
  image: { name: 'tiny-linux', revision: 3 },
  record: 'default',
  system: 'tiny01',
  vm_name: 'tiny01',
  hostname: 'tiny01',
  boot: [
    {
      type: 'hvm',
      arch: 'x86_64',
      loader: 'hd',
      drives: [
        { disk: 'root', target: 'vda' },
        { disk: 'data', target: 'vdb' },
      ],
    },
  ],
  devices: {
    vcpus: 1,
    memory: 256 << 20,
    nics: [{ model: 'virtio' }],
    graphics: 'vnc',
    console: 'serial',
  },
  disks: [
    {
      id: 'root',
      use: 'system',
      format: 'raw',
      image_size: 64 << 20,
      size: 128 << 20,
      sha256: ROOT,
      blob: true,
    },
    {
      id: 'data',
      use: 'data',
      format: 'raw',
      image_size: 16 << 20,
      size: 16 << 20,
      sha256: DATA,
      blob: true,
    },
    { id: 'tmp', use: 'scratch', format: 'qcow2', image_size: 1 << 30, size: 1 << 30 },
  ],
  interfaces: [],
  ssh_authorized_keys: [],
  parameters: { greeting: 'hi', root_password: 's3cret', db_password: 'other' },
  parameter_sources: {},
  secrets: ['root_password', 'db_password'],
  variables: { IMAGE_STORE: '/srv/store', IMAGE_NAME: 'tiny-linux', VM_NAME: 'tiny01' },
  provision: { script: 'provision.sh', custom_scripts: [] },
} as unknown as PlanDoc;

const CAPS =
  "<guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/></arch></guest>";

interface Fakes {
  deps: VirtDeps;
  calls: string[][];
  events: string[];
  domains: Set<string>;
}

/** Fakes for every side effect: qemu-img, genisoimage and virsh write or record what they would. */
function fakes(dir: string, options: { failOn?: string } = {}): Fakes {
  const calls: string[][] = [];
  const events: string[] = [];
  const domains = new Set<string>();
  const runner: ProcessRunner = {
    async run(file, args) {
      calls.push([file, ...args]);
      const command = file === 'virsh' ? args[2]! : file;
      if (options.failOn === command)
        throw Object.assign(new Error('failed'), { stderr: `${command}: it broke` });
      if (file === 'qemu-img' && (args[0] === 'create' || args[0] === 'convert'))
        await writeFile(args[args[0] === 'create' ? args.length - 2 : args.length - 1]!, 'disk');
      if (file === 'genisoimage') await writeFile(args[args.indexOf('-output') + 1]!, 'iso');
      if (file === 'openssl') return { stdout: '$6$salt$hash\n' };
      if (file === 'virsh') {
        const [, , sub, name] = args;
        if (sub === 'dominfo' && !domains.has(name!)) throw new Error('no domain');
        if (sub === 'define') domains.add('tiny01');
        if (sub === 'undefine') domains.delete(name!);
      }
      return { stdout: '' };
    },
  };
  const probe: HostProbe = {
    arch: () => 'x86_64',
    cpuCount: () => 2,
    memAvailable: async () => 4 * 2 ** 30,
    freeSpace: async () => ({ bytes: 100 * 2 ** 30, device: 1 }),
    kvmOpens: async () => false,
    virsh: async (_u, args) => (args[0] === 'capabilities' ? CAPS : 'Running hypervisor: QEMU\n'),
    interfaceExists: async () => true,
  };
  const deps: VirtDeps = {
    runner,
    probe,
    client: {
      baseUrl: 'http://127.0.0.1:8460',
      getPlan: async () => ({ plan: structuredClone(PLAN) }),
      getFile: async (_image, path) => {
        if (path === 'provision.sh') return 'echo provisioning "$VM_NAME"\n';
        throw new ImgctlError('NOT_FOUND', `${path} not found`);
      },
      getImage: async () =>
        ({ image: { parameters: { greeting: { default: 'hello' } } } }) as never,
      postEvent: async (event) => {
        events.push(event.phase + (event.code ? `:${event.code}` : ''));
        return { ...event, time: '' };
      },
      downloadBlob: async (hex, dest) => {
        await writeFile(dest, hex);
        return { path: dest, size: 64, sha256: hex, resumedBytes: 0, requests: 1 };
      },
    },
    now: () => 0,
    randomHex: (bytes) => 'ab'.repeat(bytes),
    log: () => undefined,
    tmpDir: dir,
    scriptEnv: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  };
  return { deps, calls, events, domains };
}

/** The --virt options of system tiny01, everything under `dir`. */
function virtOptions(dir: string): VirtOptions {
  return {
    system: 'tiny01',
    virtPath: join(dir, 'vms'),
    cacheDir: join(dir, 'cache'),
    logDir: join(dir, 'logs'),
    connect: 'qemu:///system',
    virtType: 'auto',
    bridge: 'br0',
    nogfx: true,
  };
}

describe('provisionVirt', () => {
  let dir: string;
  let options: VirtOptions;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'virt-'));
    options = virtOptions(dir);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('pulls, makes the disks, the seed and the domain, and reports every phase', async () => {
    const f = fakes(dir);
    const result = await provisionVirt(options, f.deps);
    const blob = join(dir, 'cache/sha256/11', ROOT);
    expect(f.calls).toContainEqual([
      'qemu-img',
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      blob,
      expect.stringMatching(/tiny01-root\.qcow2\.tmp-/),
      String(128 << 20),
    ]);
    expect(f.calls).toContainEqual([
      'qemu-img',
      'convert',
      '-f',
      'raw',
      '-O',
      'raw',
      join(dir, 'cache/sha256/22', DATA),
      expect.stringMatching(/tiny01-data\.raw\.tmp-/),
    ]);
    expect(f.calls).toContainEqual([
      'qemu-img',
      'create',
      '-q',
      '-f',
      'qcow2',
      expect.stringMatching(/tiny01-tmp\.qcow2\.tmp-/),
      String(1 << 30),
    ]);
    expect(f.calls.filter((c) => c[0] === 'virsh').map((c) => c[3])).toEqual([
      'dominfo',
      'define',
      'start',
    ]);
    expect(f.events).toEqual(['started', 'disks-ready', 'configured', 'defined', 'booted', 'done']);
    expect((await readdir(options.virtPath)).sort()).toEqual([
      'tiny01-data.raw',
      'tiny01-root.qcow2',
      'tiny01-seed.iso',
      'tiny01-tmp.qcow2',
    ]);
    expect(result).toMatchObject({
      vm: 'tiny01',
      virtType: 'qemu',
      instanceId: 'tiny01-abababab',
      started: true,
    });
    expect(result.xml).toContain("<domain type='qemu'>");
    expect(result.xml).toContain("<source bridge='br0'/>");
    expect(result.xml).toContain("<mac address='52:54:00:ab:ab:ab'/>");
    expect(result.xml).toContain("<target dev='hdc' bus='ide'/>");
    expect(result.xml).not.toContain('<graphics');
    // Only root's password is hashed (openssl reads it on stdin); db_password never is.
    expect(f.calls.filter((c) => c[0] === 'openssl')).toEqual([
      ['openssl', 'passwd', '-6', '-stdin'],
    ]);
  });

  it('refuses to clobber an existing VM and changes nothing (CONFLICT)', async () => {
    const f = fakes(dir);
    f.domains.add('tiny01');
    await expect(provisionVirt(options, f.deps)).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(f.events).toEqual([]);
    expect(f.calls.every((c) => c[0] === 'virsh' && c[3] === 'dominfo')).toBe(true);
  });

  it('a failure removes what the run made and reports failed', async () => {
    const f = fakes(dir, { failOn: 'start' });
    await expect(provisionVirt(options, f.deps)).rejects.toThrow(/virsh start: start: it broke/);
    expect(f.events).toEqual(['started', 'disks-ready', 'configured', 'defined', 'failed:FAILED']);
    expect(await readdir(options.virtPath)).toEqual([]);
    expect(f.domains.has('tiny01')).toBe(false);
  });

  it('--keep-on-failure leaves the disks and the domain', async () => {
    const f = fakes(dir, { failOn: 'start' });
    await expect(provisionVirt({ ...options, keepOnFailure: true }, f.deps)).rejects.toMatchObject({
      details: [expect.stringMatching(/^kept \(--keep-on-failure\): domain tiny01, /)],
    });
    expect(await readdir(options.virtPath)).toContain('tiny01-root.qcow2');
    expect(f.domains.has('tiny01')).toBe(true);
  });

  it('--dry-run checks and renders, and changes nothing', async () => {
    const f = fakes(dir);
    const result = await provisionVirt({ ...options, dryRun: true }, f.deps);
    expect(result.dryRun).toBe(true);
    expect(result.xml).toContain('<name>tiny01</name>');
    expect(f.events).toEqual([]);
    expect(f.calls.filter((c) => c[0] !== 'virsh' || c[3] !== 'dominfo')).toEqual([]);
    expect(await readdir(dir)).toEqual([]);
  });

  it('a host that cannot run the plan is refused with every reason (HOST)', async () => {
    const f = fakes(dir);
    f.deps.probe.memAvailable = async () => 1 << 20;
    f.deps.probe.cpuCount = () => 0;
    await expect(provisionVirt(options, f.deps)).rejects.toMatchObject({
      code: 'HOST',
      details: [
        'the VM needs 1 vCPUs and this host has 0',
        'the VM needs 256MiB of memory and 1MiB is available (MemAvailable)',
      ],
    });
    expect(f.events).toEqual([]);
  });
});

describe('renderConfig', () => {
  it('writes NAME=VALUE lines that config_get reads back, quotes and all', () => {
    expect(renderConfig({ A: "it's", B: 8080, C: true, D: null, 'bad-name': 'x' })).toBe(
      `A='it'"'"'s'\nB='8080'\nC='true'\nD=''\n`,
    );
  });
});

describe('planFingerprint', () => {
  it('is the same for a release asked for by channel or by revision, and changes with the plan', () => {
    const release = { ...PLAN, image: { ...PLAN.image, release: 'tiny-linux@3' } };
    const viaChannel = { ...release, image: { ...release.image, reference: 'tiny-linux@stable' } };
    expect(planFingerprint(viaChannel)).toBe(planFingerprint(release));
    const greeting = { ...release, parameters: { ...release.parameters, greeting: 'hello' } };
    expect(planFingerprint(greeting)).not.toBe(planFingerprint(release));
    // a secret is not in it: the digest says nothing about a password
    const password = { ...release, parameters: { ...release.parameters, root_password: 'x' } };
    expect(planFingerprint(password)).toBe(planFingerprint(release));
  });
});

describe('updateVirt', () => {
  let dir: string;
  afterEach(() => rm(dir, { recursive: true, force: true }));

  /** A VM made by provisionVirt, whose definition the fake virsh then answers dumpxml with. */
  async function madeVm() {
    dir = await mkdtemp(join(tmpdir(), 'update-'));
    const f = fakes(dir);
    const made = await provisionVirt(virtOptions(dir), f.deps);
    const runner = f.deps.runner;
    f.deps.runner = {
      async run(file, args, opts) {
        if (file === 'virsh' && args[2] === 'dumpxml') return { stdout: made.xml };
        if (file === 'virsh' && args[2] === 'domstate') return { stdout: 'shut off\n' };
        return runner.run(file, args, opts);
      },
    };
    f.calls.length = 0;
    f.events.length = 0;
    const options: UpdateOptions = {
      vmName: 'tiny01',
      cacheDir: join(dir, 'cache'),
      logDir: join(dir, 'logs'),
      connect: 'qemu:///system',
      virtType: 'auto',
      bridge: 'br0',
      shutdownTimeoutMs: 1000,
    };
    return { f, options };
  }

  it('changes nothing when the plan is the one the VM was made from', async () => {
    const { f, options } = await madeVm();
    const { result, failure } = await updateVirt(options, f.deps);
    expect(failure).toBeUndefined();
    expect(result).toMatchObject({ action: 'up-to-date', from: { generation: 1 } });
    expect(f.calls.filter((c) => c[0] !== 'virsh' || c[3] !== 'dumpxml')).toEqual([]);
  });

  it('--image of the plan the VM runs makes it follow that reference, and changes nothing else', async () => {
    const { f, options } = await madeVm();
    const { result } = await updateVirt({ ...options, image: 'tiny-linux@stable' }, f.deps);
    expect(result.action).toBe('up-to-date');
    const metadata = f.calls.filter((c) => c[3] === 'metadata');
    expect(metadata).toHaveLength(1);
    expect(metadata[0]!.join(' ')).toContain("reference='tiny-linux@stable'");
    expect(f.calls.filter((c) => c[0] === 'qemu-img' || c[3] === 'define')).toEqual([]);
  });

  it('never makes a disk over a file that is there: a data disk detached earlier', async () => {
    const { f, options } = await madeVm();
    const plan = structuredClone(PLAN);
    plan.disks.push({ ...plan.disks[1]!, id: 'logs' });
    f.deps.client.getPlan = async () => ({ plan });
    const detached = join(dir, 'vms', 'tiny01-logs.raw');
    await writeFile(detached, 'the data of an earlier release');
    await expect(updateVirt(options, f.deps)).rejects.toMatchObject({
      code: 'CONFLICT',
      details: [detached],
    });
    expect(await readFile(detached, 'utf8')).toBe('the data of an earlier release');
    expect(f.calls.filter((c) => c[0] === 'qemu-img' || c[3] === 'define')).toEqual([]);
  });

  it('refuses --follow of another image', async () => {
    const { f, options } = await madeVm();
    const plan = structuredClone(PLAN);
    plan.parameters.greeting = 'release 2';
    f.deps.client.getPlan = async () => ({ plan });
    await expect(updateVirt({ ...options, follow: 'web@stable' }, f.deps)).rejects.toMatchObject({
      code: 'USAGE',
      message: '--follow web@stable: the VM runs tiny-linux',
    });
    expect(f.calls.filter((c) => c[0] === 'qemu-img' || c[3] === 'define')).toEqual([]);
  });

  it('refuses a release without a data disk the VM has, before making anything', async () => {
    const { f, options } = await madeVm();
    const plan = structuredClone(PLAN);
    plan.disks = plan.disks.filter((d) => d.id !== 'data');
    f.deps.client.getPlan = async () => ({ plan });
    await expect(updateVirt(options, f.deps)).rejects.toMatchObject({
      code: 'CONFLICT',
      message: expect.stringContaining("has no data disk 'data', which tiny01 has") as unknown,
    });
    expect(f.calls.filter((c) => c[0] === 'qemu-img' || c[3] === 'define')).toEqual([]);
    expect(f.events).not.toContain('started');
  });

  it('a dry run leaves what a killed run left, and says what it would make', async () => {
    const { f, options } = await madeVm();
    const plan = structuredClone(PLAN);
    plan.parameters.greeting = 'release 2';
    f.deps.client.getPlan = async () => ({ plan });
    const leftover = join(dir, 'vms', 'tiny01.g2.xml');
    await writeFile(leftover, 'a definition a killed run wrote');
    const { result } = await updateVirt({ ...options, dryRun: true }, f.deps);
    expect(result).toMatchObject({ action: 'updated', dryRun: true, to: { generation: 2 } });
    expect(result.xml).toContain(join(dir, 'vms', 'tiny01-root.g2.qcow2'));
    expect(result.xml).toContain(join(dir, 'vms', 'tiny01-data.raw'));
    expect(await readdir(join(dir, 'vms'))).toContain('tiny01.g2.xml');
    expect(f.calls.filter((c) => c[0] === 'qemu-img' || c[3] === 'define')).toEqual([]);
  });
});
