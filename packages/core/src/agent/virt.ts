/**
 * `imgagent --virt` (docs/agent.md): from a plan served by `imgctl serve` to a defined, started
 * libvirt domain. Plan → host check → blobs into the cache → per-VM disks → seed ISO and the
 * provisioning scripts → domain defined, autostarted, started; an event to the server at each
 * phase. A failure removes what this run created (unless keepOnFailure) and reports `failed`.
 *
 * Every side effect goes through `VirtDeps` (processes, the server, the host probe, the clock,
 * randomness), so unit tests run the whole flow with fakes.
 */
import { createHash } from 'node:crypto';
import { access, chmod, link, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir } from '../store/store.ts';
import {
  asImgctlError,
  assertPullable,
  eventSender,
  interrupted,
  passwordHashes,
  warnIfDeprecated,
  type StepDeps,
  progressLogger,
  publicParameters,
  run,
  runProvisioning,
  short,
} from './steps.ts';
import type { ProcessRunner } from '../util/process.ts';
import { type MirrorAccess, mirroredDownloader } from './blob-sources.ts';
import { openBlobCache } from './blob-cache.ts';
import type { Client, PlanQuery } from '../client/client.ts';
import { type DomainDisk, type DomainNic, renderDomainXml, type VmMeta } from './domain-xml.ts';
import { redactPlan } from '../plan/plan.ts';
import { canonicalJson } from '../plan/signing.ts';
import { parseDuration } from '../util/duration.ts';
import { parseImageRef } from '../store/releases.ts';
import { ImgctlError } from '../util/errors.ts';
import { checkHost, type HostCheckResult, type HostProbe, type VirtType } from './host-check.ts';
import { assertName } from '../util/names.ts';
import { renderSeed, writeSeedIso } from './seed.ts';
import { formatSize } from '../util/sizes.ts';
import type { PlanDisk, PlanDoc } from '../store/types.ts';

export const DEFAULT_VIRT_PATH = '/var/lib/libvirt/images';
export const DEFAULT_LOG_DIR = '/var/log/imgctl';
export const DEFAULT_CONNECT = 'qemu:///system';

export type VirtClient = Pick<
  Client,
  'baseUrl' | 'getPlan' | 'getFile' | 'getImage' | 'postEvent' | 'downloadBlob'
>;

export interface VirtDeps extends StepDeps {
  client: VirtClient;
  probe: HostProbe;
  /** `bytes` random bytes as lowercase hex */
  randomHex(bytes: number): string;
  /** where the run's scratch directory (scripts, config files, XML) is made */
  tmpDir: string;
  /** waits between polls of a domain (tests pass a fake); default: a real timer */
  sleep?(ms: number): Promise<void>;
  /** the registries disks are pulled from before the server (--blob-mirror, the plan's) */
  mirrors?: MirrorAccess;
}

export interface VirtOptions extends PlanQuery {
  virtPath: string;
  cacheDir: string;
  /** evict unreferenced blobs beyond this many bytes after pulling */
  cacheLimit?: number;
  logDir: string;
  connect: string;
  virtType: VirtType | 'auto';
  bridge?: string;
  nogfx?: boolean;
  noStart?: boolean;
  autostart?: boolean;
  dryRun?: boolean;
  printXml?: boolean;
  force?: boolean;
  keepOnFailure?: boolean;
  /**
   * the reference the VM follows from now on, when it is not --image: imgctl provision plans
   * every target from the release a channel pointed at, and the VMs follow the channel
   */
  follow?: string;
}

export interface VmDisk {
  id: string;
  use: PlanDisk['use'];
  path: string;
  format: string;
  target: string;
  size: number;
  /** the cached blob a system disk is an overlay on, or a data disk was copied from */
  source?: string;
  sha256?: string;
}

export interface VirtResult {
  vm: string;
  image: string;
  record: string;
  system?: string;
  hostname: string;
  virtType: VirtType;
  instanceId: string;
  disks: VmDisk[];
  seed: string;
  serialLog: string;
  logFile: string;
  xml: string;
  /** what was pulled into the cache (hex → downloaded now or found there) */
  blobs: Array<{ sha256: string; path: string; downloaded: boolean; size: number }>;
  defined: boolean;
  started: boolean;
  autostart: boolean;
  dryRun: boolean;
  host: HostCheckResult['facts'];
}

export const OVERLAY_BYTES = 1024 * 1024;
export const SEED_BYTES = 1024 * 1024;
/** how long an update waits for the health marker when the image does not say */
export const DEFAULT_HEALTH_TIMEOUT = '300s';

/** The whole --virt flow. Throws ImgctlError with the code of design.md §4 on failure. */
export async function provisionVirt(options: VirtOptions, deps: VirtDeps): Promise<VirtResult> {
  const { runner, client } = deps;
  // getPlan reads only the PlanQuery fields of the options
  const { plan } = await client.getPlan(options);
  warnIfDeprecated(plan, deps.log);
  const vm = assertName('VM', plan.vm_name);
  const layout = planLayout(plan, options);
  const cache = openBlobCache(options.cacheDir);
  const virsh = (args: string[]) => runner.run('virsh', ['--connect', options.connect, ...args]);

  // Refuse to clobber: an existing domain or disk of this VM is a conflict unless --force.
  const existing = await existingParts(vm, layout, virsh);
  if (existing.length > 0 && !options.force) {
    throw new ImgctlError('CONFLICT', `VM '${vm}' already exists: ${existing.join(', ')}`, {
      hint: 'nothing was changed; give --force to replace it (its disks, data disks included, are recreated)',
    });
  }

  const virtPathBytes =
    SEED_BYTES +
    plan.disks.reduce((sum, d) => sum + (d.use === 'data' ? d.size : OVERLAY_BYTES), 0);
  const host = await checkVirtHost(plan, options, deps, virtPathBytes);
  for (const disk of plan.disks) if (disk.use !== 'scratch') assertPullable(plan, disk);

  const instanceId = `${vm}-${deps.randomHex(4)}`;
  const disks = vmDisks(plan, layout, host.boot.drives, (hex) => cache.path(hex));
  const nics = vmNics(plan, options.bridge, deps.randomHex);
  const xml = vmDomainXml(plan, {
    virtType: host.virtType,
    boot: host.boot,
    disks,
    layout,
    nics,
    graphics: options.nogfx ? 'none' : plan.devices.graphics,
    meta: vmMeta(plan, {
      generation: 1,
      health: 'none',
      instanceId,
      layout,
      disks,
      options,
    }),
  });
  const result: VirtResult = {
    vm,
    image: plan.image.name,
    record: plan.record,
    system: plan.system,
    hostname: plan.hostname,
    virtType: host.virtType,
    instanceId,
    disks,
    seed: layout.seed,
    serialLog: layout.serialLog,
    logFile: layout.logFile,
    xml,
    blobs: [],
    defined: false,
    started: false,
    autostart: Boolean(options.autostart),
    dryRun: Boolean(options.dryRun || options.printXml),
    host: host.facts,
  };
  if (options.dryRun || options.printXml) return result;

  // From here on this run changes the host: remember what it made, to undo it on failure.
  const created: string[] = [];
  const refs: Array<[string, string]> = [];
  let defined = false;
  const events = eventSender(deps, plan, vm);
  let work: string | undefined;
  try {
    if (existing.length > 0) await removeExisting(vm, layout, virsh, deps);
    await events.send('started');

    result.blobs = await pullBlobs(plan, disks, refs, deps, options);
    await events.send('disks-ready');

    await makeVmDisks(plan, disks, created, deps, options.virtPath);
    work = await mkdtemp(join(deps.tmpDir, 'imgagent-'));
    created.push(layout.seed);
    await configureVm(plan, { instanceId, layout, work, virtPath: options.virtPath }, deps);
    await events.send('configured');

    // The domain.
    const xmlFile = join(work, `${vm}.xml`);
    await writeFile(xmlFile, xml, { mode: 0o600 });
    created.push(layout.serialLog);
    await run(runner, 'virsh', ['--connect', options.connect, 'define', xmlFile], 'virsh define');
    defined = true;
    result.defined = true;
    deps.log(`defined domain ${vm} (${host.virtType}) at ${options.connect}`);
    await events.send('defined');
    if (options.autostart) {
      await run(
        runner,
        'virsh',
        ['--connect', options.connect, 'autostart', vm],
        'virsh autostart',
      );
    }
    if (!options.noStart) {
      await run(runner, 'virsh', ['--connect', options.connect, 'start', vm], 'virsh start');
      result.started = true;
      deps.log(`started ${vm}; its serial console goes to ${layout.serialLog}`);
      await events.send('booted');
    }
    await events.send('done');
    return result;
  } catch (error) {
    const failure = interrupted(deps) ?? asImgctlError(error);
    if (!options.keepOnFailure) {
      if (defined) {
        await virsh(['destroy', vm]).catch(() => undefined);
        await virsh(['undefine', vm]).catch(() => undefined);
      }
      for (const file of created.reverse()) await rm(file, { force: true });
      for (const [hex, path] of refs) await cache.removeRef(hex, path).catch(() => undefined);
    } else if (failure && (created.length > 0 || defined)) {
      failure.details.push(
        `kept (--keep-on-failure): ${[...(defined ? [`domain ${vm}`] : []), ...created].join(', ')}`,
      );
    }
    throw await events.failed(error, failure);
  } finally {
    if (work) await rm(work, { recursive: true, force: true });
  }
}

/** A VM's domain definition: its disks, the seed as a cdrom, its nics, and imgagent's metadata. */
export function vmDomainXml(
  plan: PlanDoc,
  spec: {
    virtType: VirtType;
    boot: NonNullable<HostCheckResult['boot']>;
    disks: VmDisk[];
    layout: Layout;
    nics: DomainNic[];
    graphics: 'none' | 'vnc' | 'spice';
    uuid?: string;
    meta: VmMeta;
  },
): string {
  return renderDomainXml({
    name: plan.vm_name,
    uuid: spec.uuid,
    virtType: spec.virtType,
    memoryBytes: plan.devices.memory,
    vcpus: plan.devices.vcpus,
    boot: spec.boot,
    disks: [
      ...spec.disks.map((d): DomainDisk => ({
        path: d.path,
        format: d.format,
        target: d.target,
        device: 'disk',
      })),
      { path: spec.layout.seed, format: 'raw', target: 'hdc', device: 'cdrom' },
    ],
    nics: spec.nics,
    serialLog: spec.layout.serialLog,
    graphics: spec.graphics,
    description: `imgctl: ${spec.meta.release ?? `${plan.image.name}@${plan.image.revision}`} record ${plan.record}${plan.system ? ` system ${plan.system}` : ''}, instance ${spec.meta.instance}, generation ${spec.meta.generation}`,
    metadata: spec.meta,
  });
}

/** What imgagent records in the domain of a VM generation made from `plan`. */
export function vmMeta(
  plan: PlanDoc,
  spec: {
    generation: number;
    previous?: number;
    health: VmMeta['health'];
    instanceId: string;
    layout: Layout;
    disks: VmDisk[];
    options: Pick<VirtOptions, 'virtPath' | 'follow'>;
  },
): VmMeta {
  if (spec.options.follow !== undefined) assertFollows(spec.options.follow, plan);
  return {
    generation: spec.generation,
    previous: spec.previous,
    image: plan.image.name,
    reference: spec.options.follow ?? plan.image.reference ?? plan.image.release ?? plan.image.name,
    release: plan.image.release,
    record: plan.record,
    system: plan.system,
    instance: spec.instanceId,
    fingerprint: planFingerprint(plan),
    health: spec.health,
    healthSerial: plan.health?.serial,
    healthTimeoutMs: plan.health
      ? parseDuration(plan.health.timeout ?? DEFAULT_HEALTH_TIMEOUT, 'health timeout')
      : undefined,
    virtPath: spec.options.virtPath,
    seed: spec.layout.seed,
    serialLog: spec.layout.serialLog,
    disks: spec.disks.map((d) => ({
      id: d.id,
      use: d.use,
      path: d.path,
      format: d.format,
      ...(d.use === 'system' && d.sha256 ? { sha256: d.sha256 } : {}),
    })),
  };
}

/** Throws USAGE unless `follow` is a reference to the image the VM runs. */
export function assertFollows(follow: string, plan: PlanDoc): void {
  if (parseImageRef(follow).name !== plan.image.name)
    throw new ImgctlError('USAGE', `--follow ${follow}: the VM runs ${plan.image.name}`, {
      hint: `follow a reference to ${plan.image.name}: NAME, NAME@REV or NAME@CHANNEL`,
    });
}

/**
 * What a VM is made from, as one digest: the plan with secrets redacted, without how it was
 * asked for (a channel or the release it points at plan the same VM).
 */
export function planFingerprint(plan: PlanDoc): string {
  const { reference: _reference, deprecated: _deprecated, ...image } = plan.image;
  // where the server keeps its store, which layer gave a value and where the disks are pulled
  // from do not shape the VM
  const {
    parameter_sources: _sources,
    blob_mirrors: _mirrors,
    variables,
    ...rest
  } = redactPlan(plan);
  const { IMAGE_STORE: _store, ...vars } = variables;
  return createHash('sha256')
    .update(canonicalJson({ ...rest, variables: vars, image }))
    .digest('hex');
}

/** The VM's disks that this run makes, each made under a temporary name, then linked to its own (never over a file that is there). */
export async function makeVmDisks(
  plan: PlanDoc,
  disks: VmDisk[],
  created: string[],
  deps: Pick<VirtDeps, 'runner' | 'randomHex' | 'signal'>,
  virtPath: string,
): Promise<void> {
  await ensureDir(virtPath, 0o755);
  for (const disk of disks) {
    deps.signal?.throwIfAborted();
    const tmp = `${disk.path}.tmp-${deps.randomHex(4)}`;
    created.push(tmp);
    await makeDisk(
      disk,
      plan.disks.find((d) => d.id === disk.id)!,
      tmp,
      deps.runner,
    );
    // never over a file that is there (a rename would replace it); only then is it ours
    await link(tmp, disk.path);
    created.push(disk.path);
    await rm(tmp, { force: true });
  }
}

/** Configuration: the seed, then provision.sh and the custom scripts on this host. */
export async function configureVm(
  plan: PlanDoc,
  spec: { instanceId: string; layout: Layout; work: string; virtPath: string },
  deps: VirtDeps,
): Promise<void> {
  const { runner } = deps;
  const seedFiles = renderSeed(plan, {
    instanceId: spec.instanceId,
    passwordHashes: await passwordHashes(plan, runner),
    extraUserData: { imgctl: publicParameters(plan) },
  });
  await writeSeedIso(seedFiles, spec.layout.seed, {
    run: (file, args, opts) => run(runner, file, args, 'writing the seed ISO', opts),
  });
  await chmod(spec.layout.seed, 0o644);
  await runProvisioning(
    plan,
    { work: spec.work, logFile: spec.layout.logFile, env: { VIRT_PATH: spec.virtPath } },
    deps,
  );
}

/**
 * The host check for a VM of `plan`, with the space its new files (`virtPathBytes`) and the
 * blobs not yet cached need; throws HOST with every reason when it cannot run here.
 */
export async function checkVirtHost(
  plan: PlanDoc,
  options: Pick<VirtOptions, 'connect' | 'virtType' | 'virtPath' | 'cacheDir' | 'bridge'>,
  deps: Pick<VirtDeps, 'probe'>,
  virtPathBytes: number,
): Promise<HostCheckResult & { boot: NonNullable<HostCheckResult['boot']> }> {
  const cache = openBlobCache(options.cacheDir);
  const missing: PlanDisk[] = [];
  for (const disk of plan.disks)
    if (disk.sha256 && disk.use !== 'scratch' && !(await cache.has(disk.sha256)))
      missing.push(disk);
  const cacheBytes = unique(missing, (d) => d.sha256!).reduce((sum, d) => sum + d.image_size, 0);
  const host = await checkHost(
    plan,
    {
      connect: options.connect,
      virtType: options.virtType,
      virtPath: options.virtPath,
      virtPathBytes,
      cacheDir: options.cacheDir,
      cacheBytes,
      bridge: options.bridge,
    },
    deps.probe,
  );
  if (!host.ok || !host.boot) {
    throw new ImgctlError('HOST', `this host cannot run ${plan.image.name} as '${plan.vm_name}'`, {
      details: host.reasons,
      hint: 'every reason is listed; nothing was changed',
    });
  }
  return { ...host, boot: host.boot };
}

/**
 * Pulls the blobs of the plan's disks into the cache, each referenced (in `refs`, to undo) by
 * the VM disk about to be built on it; then evicts beyond --cache-limit.
 */
export async function pullBlobs(
  plan: PlanDoc,
  disks: VmDisk[],
  refs: Array<[string, string]>,
  deps: VirtDeps,
  options: Pick<VirtOptions, 'cacheDir' | 'cacheLimit'>,
): Promise<VirtResult['blobs']> {
  const cache = openBlobCache(options.cacheDir);
  const source = mirroredDownloader(plan, deps.client, deps.mirrors, deps.log);
  const blobs: VirtResult['blobs'] = [];
  for (const disk of plan.disks) {
    const vmDisk = disks.find((d) => d.id === disk.id);
    if (!vmDisk?.source || !disk.sha256) continue;
    await cache.addRef(disk.sha256, vmDisk.path);
    refs.push([disk.sha256, vmDisk.path]);
    if (blobs.some((b) => b.sha256 === disk.sha256)) continue;
    const pulled = await cache.ensure(disk.sha256, source, {
      signal: deps.signal,
      onProgress: progressLogger(deps, disk),
      onWait: (pid) =>
        deps.log(`waiting for agent ${pid}, which is pulling sha256:${short(disk.sha256!)}`),
    });
    deps.log(
      pulled.downloaded
        ? `pulled disk ${disk.id}: sha256:${short(disk.sha256)} ${formatSize(pulled.size)}, verified`
        : `disk ${disk.id}: sha256:${short(disk.sha256)} is in the cache`,
    );
    blobs.push({ sha256: disk.sha256, ...pulled });
  }
  if (options.cacheLimit !== undefined) {
    const evicted = await cache.evict(
      options.cacheLimit,
      blobs.map((b) => b.sha256),
    );
    for (const hex of evicted) deps.log(`evicted sha256:${short(hex)} from the cache`);
  }
  return blobs;
}

export interface Layout {
  seed: string;
  serialLog: string;
  logFile: string;
  diskPath(disk: PlanDisk): string;
  /** every file of the VM at --virt-path: disks, seed, serial log */
  files(): string[];
}

/**
 * Where a VM's files go. Generation 1 is what --virt makes; an update makes generation 2, 3, …
 * whose system and scratch disks and seed carry `.gN` in their names. Data disks have one name:
 * every generation uses the same file.
 */
export function planLayout(
  plan: PlanDoc,
  options: Pick<VirtOptions, 'virtPath' | 'logDir'>,
  generation = 1,
): Layout {
  const vm = plan.vm_name;
  const gen = generation > 1 ? `.g${generation}` : '';
  const diskPath = (disk: PlanDisk) =>
    join(
      options.virtPath,
      `${vm}-${disk.id}${disk.use === 'data' ? '' : gen}.${disk.use === 'system' ? 'qcow2' : disk.format}`,
    );
  const seed = join(options.virtPath, `${vm}-seed${gen}.iso`);
  const serialLog = join(options.virtPath, `${vm}.serial.log`);
  return {
    seed,
    serialLog,
    logFile: join(options.logDir, plan.image.name, `${plan.image.name}_${vm}.log`),
    diskPath,
    files: () => [...plan.disks.map(diskPath), seed, serialLog],
  };
}

/** What of this VM is already there: the domain, its disks, its seed. */
async function existingParts(
  vm: string,
  layout: Layout,
  virsh: (args: string[]) => Promise<unknown>,
): Promise<string[]> {
  const parts: string[] = [];
  try {
    await virsh(['dominfo', vm]);
    parts.push(`libvirt domain ${vm}`);
  } catch {
    // no such domain (or no libvirt: the host check says so)
  }
  for (const file of layout.files()) {
    try {
      await access(file);
      parts.push(file);
    } catch {
      // not there
    }
  }
  return parts;
}

async function removeExisting(
  vm: string,
  layout: Layout,
  virsh: (args: string[]) => Promise<unknown>,
  deps: VirtDeps,
): Promise<void> {
  await virsh(['destroy', vm]).catch(() => undefined);
  await virsh(['undefine', vm]).catch(() => undefined);
  for (const file of layout.files()) await rm(file, { force: true });
  deps.log(`--force: removed the existing VM ${vm} (domain, disks and seed)`);
}

export function vmDisks(
  plan: PlanDoc,
  layout: Layout,
  drives: Array<{ disk: string; target: string }>,
  blobPath: (hex: string) => string,
): VmDisk[] {
  const used = new Set(drives.map((d) => d.target));
  let next = 0;
  const freeTarget = () => {
    for (;;) {
      const target = `vd${String.fromCharCode(97 + next++)}`;
      if (!used.has(target)) {
        used.add(target);
        return target;
      }
    }
  };
  return plan.disks.map((disk) => ({
    id: disk.id,
    use: disk.use,
    path: layout.diskPath(disk),
    format: disk.use === 'system' ? 'qcow2' : disk.format,
    target: drives.find((d) => d.disk === disk.id)?.target ?? freeTarget(),
    size: Math.max(disk.size, disk.image_size),
    source: disk.sha256 && disk.use !== 'scratch' ? blobPath(disk.sha256) : undefined,
    sha256: disk.use === 'scratch' ? undefined : disk.sha256,
  }));
}

export function vmNics(
  plan: PlanDoc,
  bridge: string | undefined,
  randomHex: (bytes: number) => string,
): DomainNic[] {
  return plan.devices.nics.map((nic) => {
    const mac = nic.mac?.toLowerCase() ?? `52:54:00:${randomHex(3).match(/../g)!.join(':')}`;
    const model = nic.model ?? 'virtio';
    if (bridge !== undefined) return { mac, model, bridge };
    return nic.bridge !== undefined
      ? { mac, model, bridge: nic.bridge }
      : { mac, model, network: nic.network ?? 'default' };
  });
}

/** system: a qcow2 overlay on the cached blob; data: a sparse copy; scratch: new and empty. */
export async function makeDisk(
  disk: VmDisk,
  planDisk: PlanDisk,
  file: string,
  runner: ProcessRunner,
): Promise<void> {
  const size = String(disk.size);
  if (disk.use === 'system') {
    await run(
      runner,
      'qemu-img',
      ['create', '-q', '-f', 'qcow2', '-F', planDisk.format, '-b', disk.source!, file, size],
      `creating the overlay for disk ${disk.id}`,
    );
  } else if (disk.use === 'data') {
    await run(
      runner,
      'qemu-img',
      ['convert', '-f', planDisk.format, '-O', disk.format, disk.source!, file],
      `copying data disk ${disk.id}`,
    );
    if (disk.size > planDisk.image_size) {
      await run(
        runner,
        'qemu-img',
        ['resize', '-q', '-f', disk.format, file, size],
        `growing data disk ${disk.id}`,
      );
    }
  } else {
    await run(
      runner,
      'qemu-img',
      ['create', '-q', '-f', disk.format, file, size],
      `creating scratch disk ${disk.id}`,
    );
  }
  await chmod(file, 0o600);
}

function unique<T>(items: T[], key: (item: T) => string): T[] {
  const seen = new Set<string>();
  return items.filter((i) => (seen.has(key(i)) ? false : (seen.add(key(i)), true)));
}
