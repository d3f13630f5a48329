/**
 * `imgagent --update --virt-name VM` and `imgagent --rollback --virt-name VM` (docs/agent.md,
 * "Updating a VM"). A VM is a series of generations: each is a libvirt definition whose system
 * disks are qcow2 overlays on the cached blobs of one release, with its own scratch disks and
 * seed; data disks are one set of files every generation uses. An update makes generation N+1
 * beside N, switches the domain to it (one `virsh define`), boots it and runs the image's health
 * check; a failed check switches back to N. Nothing is copied: update and rollback cost the same
 * for a 64 MiB and a 4 TiB system disk.
 *
 * Crash safety: the definition of N+1 is written to VM.gN+1.xml before any file of it exists,
 * and N's definition to VM.gN.xml before the switch. Whatever point a run is killed at, libvirt
 * holds a complete definition of N or of N+1, and the next --update or --rollback reads which
 * from the domain's metadata, removes what a dead run left of other generations, and goes on.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleepFor } from 'node:timers/promises';
import type { PlanQuery } from '../client/client.ts';
import { ImgctlError } from '../util/errors.ts';
import { assertName } from '../util/names.ts';
import { exists } from '../store/store.ts';
import { parseDuration } from '../util/duration.ts';
import type { PlanDoc } from '../store/types.ts';
import { openBlobCache } from './blob-cache.ts';
import type { DomainInfo, VmMeta } from './domain-xml.ts';
import {
  asImgctlError,
  assertPullable,
  eventSender,
  interrupted,
  run,
  warnIfDeprecated,
} from './steps.ts';
import {
  checkVirtHost,
  configureVm,
  DEFAULT_HEALTH_TIMEOUT,
  makeVmDisks,
  OVERLAY_BYTES,
  planFingerprint,
  planLayout,
  pullBlobs,
  SEED_BYTES,
  type VirtDeps,
  type VirtOptions,
  type VmDisk,
  vmDisks,
  vmDomainXml,
  vmMeta,
  vmNics,
  assertFollows,
} from './virt.ts';
import {
  definitionFile,
  keepSerialLog,
  keptGeneration,
  lockVm,
  pruneGenerations,
  readVm,
  setMeta,
  type Virsh,
  writeDurably,
} from './vm-generations.ts';

export interface UpdateOptions
  extends
    Omit<PlanQuery, 'vmName'>,
    Pick<
      VirtOptions,
      | 'cacheDir'
      | 'cacheLimit'
      | 'logDir'
      | 'connect'
      | 'virtType'
      | 'bridge'
      | 'nogfx'
      | 'dryRun'
      | 'follow'
    > {
  /** the VM; default: the VM name of --system's plan */
  vmName?: string;
  /** update even when the plan is the one the VM runs; allow another image; detach data disks */
  force?: boolean;
  /** how long a running VM gets to shut down (ACPI) before it is destroyed */
  shutdownTimeoutMs: number;
  /** overrides the timeout of the image's health check */
  healthTimeoutMs?: number;
}

export type RollbackOptions = Pick<
  UpdateOptions,
  'vmName' | 'system' | 'connect' | 'logDir' | 'shutdownTimeoutMs' | 'healthTimeoutMs'
>;

/** One generation of a VM, as the result shows it. */
export interface GenerationSummary {
  generation: number;
  image: string;
  reference: string;
  release?: string;
}

export interface HealthOutcome {
  /** what was checked: `serial 'MARKER'`, or `none` when the image declares no check */
  check: string;
  ok: boolean;
  /** seconds from the start of the domain to the answer */
  seconds: number;
  reason?: string;
}

export interface UpdateResult {
  vm: string;
  /**
   * updated: now on `to`; up-to-date: nothing to do; checked: an interrupted update's check was
   * finished; rolled-back: back on `to` after `from` failed its check, or by --rollback
   */
  action: 'updated' | 'up-to-date' | 'checked' | 'rolled-back';
  from: GenerationSummary;
  to: GenerationSummary;
  /** the check of the generation the VM ended on (and of the failed one, when it rolled back) */
  health?: HealthOutcome;
  failedHealth?: HealthOutcome;
  /** the new generation's disks (for an update) */
  disks: VmDisk[];
  /** data disks the new generation uses as they were */
  keptDataDisks: string[];
  serialLog: string;
  /** where the serial console of a failed boot was saved */
  failedSerialLog?: string;
  xml?: string;
  dryRun: boolean;
  seconds: number;
}

/** The result, and what to exit with once it is shown (a rollback is a failed update). */
export interface UpdateOutcome {
  result: UpdateResult;
  failure?: ImgctlError;
}

const POLL_MS = 500;

/** The whole --update flow for a VM. */
export async function updateVirt(options: UpdateOptions, deps: VirtDeps): Promise<UpdateOutcome> {
  const started = deps.now();
  const vm = await vmNameOf(options, deps, '--update');
  const virsh = virshOf(deps, options.connect);
  const unlock = await lockVm((await readVm(vm, virsh)).meta.virtPath, vm);
  try {
    // read again under the lock: another agent may have just finished
    const current = await readVm(vm, virsh);
    const meta = current.meta;
    if (!options.dryRun) await pruneGenerations(vm, meta, [meta.generation, meta.previous], deps);
    const { plan } = await deps.client.getPlan({
      image: options.image ?? meta.reference,
      record: options.record ?? meta.record,
      system: options.system ?? meta.system,
      vmName: vm,
      sets: options.sets,
    });
    warnIfDeprecated(plan, deps.log);
    if (plan.vm_name !== vm)
      throw new ImgctlError('CONFLICT', `the plan is for VM '${plan.vm_name}', not '${vm}'`, {
        hint: `system ${plan.system ?? '?'} names another VM; give --virt-name ${plan.vm_name}`,
      });
    if (plan.image.name !== meta.image && !options.force)
      throw new ImgctlError('CONFLICT', `${vm} runs ${meta.image}, not ${plan.image.name}`, {
        hint: 'nothing was changed; give --force to move it to another image (its data disks are kept)',
      });
    const from = summary(meta);
    const base = { vm, from, serialLog: meta.serialLog, keptDataDisks: [], disks: [] };
    if (planFingerprint(plan) === meta.fingerprint && !options.force) {
      const follow = options.follow ?? options.image ?? meta.reference;
      assertFollows(follow, plan);
      if (follow !== meta.reference && !options.dryRun) {
        await setMeta(vm, { ...meta, reference: follow }, options.connect, deps);
        deps.log(`${vm} follows ${follow} from now on (it was ${meta.reference})`);
        meta.reference = follow;
      }
      if (meta.health !== 'pending' || options.dryRun) {
        deps.log(`${vm} is up to date: generation ${meta.generation}, ${describe(from)}`);
        return {
          result: {
            ...base,
            action: 'up-to-date',
            to: from,
            dryRun: Boolean(options.dryRun),
            seconds: 0,
          },
        };
      }
      // An update was interrupted after it switched: its check decides now.
      deps.log(`${vm}: generation ${meta.generation} was not seen healthy yet; checking it again`);
      const settled: VirtDeps = { ...deps, signal: undefined };
      const events = eventSender(settled, plan, vm);
      await events.send('started');
      return await bootAndCheck(
        vm,
        meta,
        plan,
        events,
        { ...base, action: 'checked' },
        options,
        settled,
        started,
      );
    }
    return await switchGeneration(vm, current, plan, options, deps, started);
  } finally {
    await unlock();
  }
}

/** `imgagent --rollback`: back to the generation the current one replaced, by hand. */
export async function rollbackVirt(
  options: RollbackOptions,
  deps: VirtDeps,
): Promise<UpdateOutcome> {
  const started = deps.now();
  const vm = await vmNameOf(options, deps, '--rollback');
  const virsh = virshOf(deps, options.connect);
  const unlock = await lockVm((await readVm(vm, virsh)).meta.virtPath, vm);
  try {
    const { meta } = await readVm(vm, virsh);
    const target = await keptGeneration(vm, meta);
    const events = eventSender(deps, eventSubject(target.meta), vm);
    await events.send('started');
    const health = await switchBack(vm, target, virsh, options, { ...deps, signal: undefined });
    await events.send('rolled-back', {
      message: `from generation ${meta.generation} (${describe(summary(meta))}), by hand`,
    });
    const result: UpdateResult = {
      vm,
      action: 'rolled-back',
      from: summary(meta),
      to: summary(target.meta),
      health,
      disks: [],
      keptDataDisks: [],
      serialLog: target.meta.serialLog,
      dryRun: false,
      seconds: (deps.now() - started) / 1000,
    };
    if (!health.ok) {
      const failure = new ImgctlError(
        'FAILED',
        `rolled back ${vm} to generation ${target.meta.generation}, but it failed its health check: ${health.reason}`,
        { hint: `its serial console is ${target.meta.serialLog}` },
      );
      await events.failed(failure, failure);
      return { result, failure };
    }
    await events.send('done');
    return { result };
  } finally {
    await unlock();
  }
}

/** Makes generation N+1 beside N, switches to it, checks it, and rolls back when it fails. */
async function switchGeneration(
  vm: string,
  current: DomainInfo & { meta: VmMeta; xml: string },
  plan: PlanDoc,
  options: UpdateOptions,
  deps: VirtDeps,
  started: number,
): Promise<UpdateOutcome> {
  const meta = current.meta;
  const generation = meta.generation + 1;
  const virtPath = meta.virtPath;
  const layout = planLayout(plan, { virtPath, logDir: options.logDir }, generation);

  // Data disks stay as they are: one the new plan does not have would be detached.
  const keptData = meta.disks.filter((d) => d.use === 'data');
  const dropped = keptData.filter(
    (d) => !plan.disks.some((p) => p.id === d.id && p.use === 'data'),
  );
  if (dropped.length > 0 && !options.force) {
    throw new ImgctlError(
      'CONFLICT',
      `${describe(summaryOfPlan(plan))} has no data disk ${dropped.map((d) => `'${d.id}'`).join(', ')}, which ${vm} has`,
      {
        hint: 'nothing was changed; --force updates it anyway and detaches them (their files are kept)',
      },
    );
  }
  const newFiles = plan.disks.filter(
    (d) => d.use !== 'data' || !keptData.some((k) => k.id === d.id),
  );
  const host = await checkVirtHost(
    plan,
    { ...options, virtPath },
    deps,
    SEED_BYTES + newFiles.reduce((sum, d) => sum + (d.use === 'data' ? d.size : OVERLAY_BYTES), 0),
  );
  for (const disk of plan.disks) if (disk.use !== 'scratch') assertPullable(plan, disk);
  const cache = openBlobCache(options.cacheDir);
  const disks = vmDisks(plan, layout, host.boot.drives, (hex) => cache.path(hex)).map((d) => {
    const kept = keptData.find((k) => k.id === d.id && d.use === 'data');
    return kept ? { ...d, path: kept.path, format: kept.format, source: undefined } : d;
  });
  const toMake = disks.filter((d) => !keptData.some((k) => k.path === d.path));
  // never over a file that is there: a data disk detached earlier, a disk of generation 1
  const there = (
    await Promise.all(toMake.map(async (d) => ((await exists(d.path)) ? d.path : undefined)))
  ).filter((p) => p !== undefined);
  if (there.length > 0)
    throw new ImgctlError('CONFLICT', `${vm}: the new generation's files are already there`, {
      details: there,
      hint: 'nothing was changed; move them away (a data disk detached by an earlier --force update keeps its data there)',
    });
  const instanceId = `${vm}-${deps.randomHex(4)}`;
  // The nics keep their MAC addresses (the guest's network identity) and, without
  // --virt-bridge, the bridge or network this host attached them to.
  const nics = vmNics(plan, options.bridge, deps.randomHex).map((nic, i) => {
    const was = current.nics[i];
    const mac = plan.devices.nics[i]?.mac?.toLowerCase() ?? (was?.mac || nic.mac);
    if (options.bridge !== undefined || !(was?.bridge || was?.network)) return { ...nic, mac };
    return { ...nic, mac, bridge: was.bridge, network: was.bridge ? undefined : was.network };
  });
  // An unchecked generation (an update killed before its check) is no way back.
  const previous = meta.health === 'pending' ? (meta.previous ?? meta.generation) : meta.generation;
  if (previous !== meta.generation)
    deps.log(
      `generation ${meta.generation} was never seen healthy: generation ${previous} stays the way back`,
    );
  const newMeta = vmMeta(plan, {
    generation,
    previous,
    health: 'pending',
    instanceId,
    layout,
    disks,
    options: { virtPath, follow: options.follow ?? options.image ?? meta.reference },
  });
  const xml = vmDomainXml(plan, {
    virtType: host.virtType,
    boot: host.boot,
    disks,
    layout,
    nics,
    graphics: options.nogfx ? 'none' : plan.devices.graphics,
    uuid: current.uuid,
    meta: newMeta,
  });
  const base = {
    vm,
    from: summary(meta),
    disks,
    keptDataDisks: disks.filter((d) => !toMake.includes(d)).map((d) => d.path),
    serialLog: layout.serialLog,
  };
  if (options.dryRun) {
    return {
      result: {
        ...base,
        action: 'updated',
        to: summary(newMeta),
        xml,
        dryRun: true,
        seconds: 0,
      },
    };
  }

  const events = eventSender(deps, plan, vm);
  const created: string[] = [];
  const refs: Array<[string, string]> = [];
  let work: string | undefined;
  try {
    // What generation N+1 is made of goes down before any of it exists, and N's definition is
    // kept for the way back.
    await writeDurably(definitionFile(virtPath, vm, generation), xml);
    created.push(definitionFile(virtPath, vm, generation));
    await writeDurably(definitionFile(virtPath, vm, meta.generation), current.xml);
    await events.send('started');
    deps.log(
      `updating ${vm}: generation ${meta.generation} (${describe(summary(meta))}) → ${generation} (${describe(summary(newMeta))})`,
    );
    await pullBlobs(plan, toMake, refs, deps, options);
    await events.send('disks-ready');
    await makeVmDisks(plan, toMake, created, deps, virtPath);
    work = await mkdtemp(join(deps.tmpDir, 'imgagent-'));
    created.push(layout.seed);
    await configureVm(plan, { instanceId, layout, work, virtPath }, deps);
    await events.send('configured');
  } catch (error) {
    const failure = interrupted(deps) ?? asImgctlError(error);
    for (const file of created.reverse()) await rm(file, { force: true });
    for (const [hex, path] of refs) await cache.removeRef(hex, path).catch(() => undefined);
    throw await events.failed(error, failure);
  } finally {
    if (work) await rm(work, { recursive: true, force: true });
  }

  // The switch: one `virsh define` while generation N still runs (its next start is N+1); a
  // define that fails leaves N as it was. What N+1 made goes at the next run.
  try {
    await run(
      deps.runner,
      'virsh',
      ['--connect', options.connect, 'define', definitionFile(virtPath, vm, generation)],
      'virsh define',
    );
  } catch (error) {
    throw await events.failed(error, interrupted(deps) ?? asImgctlError(error));
  }
  deps.log(`defined ${vm} as generation ${generation}`);
  // From here on an interruption (Ctrl-C, SIGTERM from imgctl provision) does not stop the run
  // half-way: the check and, if it fails, the way back take their bounded time.
  const settled: VirtDeps = { ...deps, signal: undefined };
  const settledEvents = eventSender(settled, plan, vm, true);
  await settledEvents.send('defined');
  return await bootAndCheck(
    vm,
    newMeta,
    plan,
    settledEvents,
    { ...base, action: 'updated' },
    options,
    settled,
    started,
  );
}

/**
 * Stops the domain (its next start is generation `meta`, defined), starts it and runs its
 * check: healthy, it stays and the generations before its previous one go; not, the previous
 * generation is defined and started again, and the outcome carries the failure.
 */
async function bootAndCheck(
  vm: string,
  meta: VmMeta,
  plan: PlanDoc,
  events: ReturnType<typeof eventSender>,
  base: Omit<UpdateResult, 'to' | 'dryRun' | 'seconds'>,
  options: UpdateOptions,
  deps: VirtDeps,
  started: number,
): Promise<UpdateOutcome> {
  const virsh = virshOf(deps, options.connect);
  await stopDomain(vm, virsh, deps, options.shutdownTimeoutMs);
  const health = await startAndCheck(vm, meta, virsh, options.healthTimeoutMs, deps);
  const seconds = () => (deps.now() - started) / 1000;
  if (health.ok) {
    await setMeta(vm, { ...meta, health: 'ok' }, options.connect, deps);
    await pruneGenerations(vm, meta, [meta.generation, meta.previous], deps);
    deps.log(
      `${vm} is healthy on generation ${meta.generation} (${health.check}, ${health.seconds.toFixed(1)}s)`,
    );
    await events.send('healthy');
    await events.send('done');
    return { result: { ...base, to: summary(meta), health, dryRun: false, seconds: seconds() } };
  }

  // The way back.
  const failedSerialLog = await keepSerialLog(vm, meta, options.logDir);
  deps.log(
    `${vm}: generation ${meta.generation} failed its health check: ${health.reason}; rolling back`,
  );
  let target: Awaited<ReturnType<typeof keptGeneration>>;
  try {
    target = await keptGeneration(vm, meta);
  } catch (error) {
    const stuck = new ImgctlError(
      'FAILED',
      `${describe(summary(meta))} failed its health check (${health.check}): ${health.reason}; ${vm} stays on it: ${(error as Error).message}`,
      { hint: 'fix the release and run --update again, or make the VM again' },
    );
    throw await events.failed(stuck, stuck);
  }
  const back = await switchBack(vm, target, virsh, options, deps);
  await pruneGenerations(vm, target.meta, [target.meta.generation, target.meta.previous], deps);
  await events.send('rolled-back', {
    message: `to generation ${target.meta.generation} (${describe(summary(target.meta))}): ${health.reason}`,
  });
  const failure = new ImgctlError(
    'FAILED',
    `${describe(summary(meta))} failed its health check (${health.check}): ${health.reason}; ${vm} was rolled back to generation ${target.meta.generation} (${describe(summary(target.meta))})`,
    {
      details: [
        ...(failedSerialLog ? [`the failed boot's serial console: ${failedSerialLog}`] : []),
        back.ok
          ? `generation ${target.meta.generation} is up again (${back.check}, ${back.seconds.toFixed(1)}s)`
          : `generation ${target.meta.generation} did not pass its check either: ${back.reason}`,
      ],
      hint: 'fix the release (or move its channel back); the next --update tries again',
    },
  );
  await events.failed(failure, failure);
  return {
    result: {
      ...base,
      action: 'rolled-back',
      from: summary(meta),
      to: summary(target.meta),
      health: back,
      failedHealth: health,
      failedSerialLog,
      dryRun: false,
      seconds: seconds(),
    },
    failure,
  };
}

/** Defines a kept generation again and starts it; returns its check. */
async function switchBack(
  vm: string,
  target: { meta: VmMeta; file: string },
  virsh: Virsh,
  options: Pick<UpdateOptions, 'connect' | 'healthTimeoutMs' | 'shutdownTimeoutMs'>,
  deps: VirtDeps,
): Promise<HealthOutcome> {
  await run(
    deps.runner,
    'virsh',
    ['--connect', options.connect, 'define', target.file],
    'virsh define',
  );
  deps.log(`defined ${vm} as generation ${target.meta.generation} again`);
  await stopDomain(vm, virsh, deps, options.shutdownTimeoutMs);
  return await startAndCheck(vm, target.meta, virsh, options.healthTimeoutMs, deps);
}

/** Starts the domain and waits for its check; a start that fails is a failed check. */
async function startAndCheck(
  vm: string,
  meta: VmMeta,
  virsh: Virsh,
  timeoutMs: number | undefined,
  deps: VirtDeps,
): Promise<HealthOutcome> {
  const check = meta.healthSerial ? `serial '${meta.healthSerial}'` : 'none';
  const t0 = deps.now();
  try {
    await virsh(['start', vm]);
  } catch (error) {
    const e = error as { stderr?: string; message?: string };
    const text = (e.stderr || e.message || String(error)).trim().split('\n').pop();
    return { check, ok: false, seconds: 0, reason: `virsh start failed: ${text}` };
  }
  deps.log(`started ${vm}; its serial console goes to ${meta.serialLog}`);
  if (!meta.healthSerial) {
    deps.log('the image declares no health check: a domain that starts counts as healthy');
    return { check, ok: true, seconds: (deps.now() - t0) / 1000 };
  }
  const limit =
    timeoutMs ?? meta.healthTimeoutMs ?? parseDuration(DEFAULT_HEALTH_TIMEOUT, 'health timeout');
  const seen = async () =>
    (await readFile(meta.serialLog, 'utf8').catch(() => '')).includes(meta.healthSerial!);
  for (;;) {
    deps.signal?.throwIfAborted();
    const seconds = (deps.now() - t0) / 1000;
    if (await seen()) return { check, ok: true, seconds };
    const state = await domainState(vm, virsh);
    if (state === 'shut off' || state === 'crashed') {
      if (await seen()) return { check, ok: true, seconds };
      return {
        check,
        ok: false,
        seconds,
        reason: `the VM stopped (${state}) before its serial console showed '${meta.healthSerial}'`,
      };
    }
    if (deps.now() - t0 > limit) {
      return {
        check,
        ok: false,
        seconds,
        reason: `'${meta.healthSerial}' did not appear on the serial console within ${Math.round(limit / 1000)}s`,
      };
    }
    await (deps.sleep ?? sleepFor)(POLL_MS);
  }
}

/** Shuts the domain down (ACPI), destroying it when it is still up after `timeoutMs`. */
async function stopDomain(vm: string, virsh: Virsh, deps: VirtDeps, timeoutMs: number) {
  if ((await domainState(vm, virsh)) === 'shut off') return;
  deps.log(`shutting ${vm} down`);
  await virsh(['shutdown', vm]).catch(() => undefined);
  const t0 = deps.now();
  while (deps.now() - t0 < timeoutMs) {
    if ((await domainState(vm, virsh)) === 'shut off') return;
    await (deps.sleep ?? sleepFor)(POLL_MS);
  }
  deps.log(`${vm} did not shut down within ${Math.round(timeoutMs / 1000)}s: destroying it`);
  await virsh(['destroy', vm]).catch(() => undefined);
}

async function domainState(vm: string, virsh: Virsh): Promise<string> {
  return (await virsh(['domstate', vm])).stdout.trim();
}

/** --virt-name, else the VM name the server plans for --system. */
async function vmNameOf(
  options: Pick<UpdateOptions, 'vmName' | 'system' | 'image' | 'record'>,
  deps: VirtDeps,
  action: string,
): Promise<string> {
  if (options.vmName !== undefined) return assertName('VM', options.vmName);
  if (options.system === undefined)
    throw new ImgctlError('USAGE', `${action} needs --virt-name (or --system): the VM to change`);
  const { plan } = await deps.client.getPlan({
    system: options.system,
    image: options.image,
    record: options.record,
  });
  return assertName('VM', plan.vm_name);
}

function virshOf(deps: VirtDeps, connect: string): Virsh {
  return (args) => deps.runner.run('virsh', ['--connect', connect, ...args]);
}

function summary(meta: VmMeta): GenerationSummary {
  return {
    generation: meta.generation,
    image: meta.image,
    reference: meta.reference,
    ...(meta.release ? { release: meta.release } : {}),
  };
}

function summaryOfPlan(plan: PlanDoc): Omit<GenerationSummary, 'generation'> {
  return {
    image: plan.image.name,
    reference: plan.image.reference ?? plan.image.release ?? plan.image.name,
    release: plan.image.release,
  };
}

function describe(g: Omit<GenerationSummary, 'generation'>): string {
  if (!g.release) return `${g.image} (working image)`;
  return g.reference === g.release ? g.release : `${g.release} via ${g.reference}`;
}

/** What events of a generation name: its system, image and release. */
function eventSubject(meta: VmMeta) {
  return {
    system: meta.system,
    record: meta.record,
    image: { name: meta.image, release: meta.release },
  };
}
