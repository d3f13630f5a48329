/**
 * `imgagent --replace-self` (docs/agent.md): writes an image over a disk of this machine and
 * makes it ready to boot. Plan → target checks (in use, size, content) → the system disk
 * streamed from the server onto the target while hashed (raw; other formats through the cache
 * and `qemu-img convert`), fsynced and read back → data disks onto their --data-disk targets →
 * the config partition (NoCloud seed, label cidata) → provision.sh and the custom scripts →
 * events → what happens at the next boot, or a reboot / kexec when asked.
 */
import { type FileHandle, mkdtemp, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  asImgctlError,
  assertPullable,
  eventSender,
  interrupted,
  kexecNow,
  passwordHashes,
  warnIfDeprecated,
  progressLogger,
  publicParameters,
  rebootNow,
  run,
  runProvisioning,
  short,
  type StepDeps,
} from './steps.ts';
import { type MirrorAccess, mirroredDownloader } from './blob-sources.ts';
import { prepareKexec } from './kexec-disk.ts';
import { openBlobCache } from './blob-cache.ts';
import type { Client, DownloadOptions, PlanQuery } from '../client/client.ts';
import {
  addConfigPartition,
  CONFIG_PARTITION_BYTES,
  CONFIG_PARTITION_ROOM,
  type ConfigPartition,
} from './config-partition.ts';
import { ImgctlError } from '../util/errors.ts';
import { assertName } from '../util/names.ts';
import { renderSeed } from './seed.ts';
import { formatSize, humanSize } from '../util/sizes.ts';
import {
  checkSeparate,
  checkTarget,
  describeContent,
  dropCachedPages,
  eraseHead,
  HEAD_BYTES,
  type HostTables,
  inspectTarget,
  openForWriting,
  openTargetWriter,
  type TargetFs,
  type TargetInfo,
  type TargetWriter,
} from './target-disk.ts';
import type { PlanDisk, PlanDoc } from '../store/types.ts';
import {
  checkViaRamdisk,
  ramdiskDryRun,
  type RamdiskSwitch,
  switchViaRamdisk,
} from './via-ramdisk.ts';

/** client.streamBlob: a blob's bytes handed to a sink in order while hashed, resumed on errors. */
export interface BlobStreamer {
  streamBlob(
    hex: string,
    sink: { write(data: Buffer, offset: number): Promise<void> },
    options?: DownloadOptions,
  ): Promise<{ size: number; sha256: string; requests: number }>;
}

export type ReplaceSelfClient = Pick<
  Client,
  'baseUrl' | 'getPlan' | 'getFile' | 'getImage' | 'postEvent' | 'downloadBlob'
> &
  BlobStreamer &
  Pick<Client, 'getRamdisk' | 'issueBootToken'>;

export interface ReplaceSelfDeps extends StepDeps {
  client: ReplaceSelfClient;
  /** `bytes` random bytes as lowercase hex */
  randomHex(bytes: number): string;
  /** where the run's scratch directory (scripts, config files, seed) is made */
  tmpDir: string;
  /** the kernel's mount, swap and sysfs tables (faked in tests) */
  tables?: HostTables;
  fs?: TargetFs;
  /** the registries disks are pulled from before the server (--blob-mirror, the plan's) */
  mirrors?: MirrorAccess;
}

export type BootAction = 'none' | 'reboot' | 'kexec';

const TARGET_FULL = 'the target disk is full: choose a larger one';

export interface ReplaceSelfOptions extends PlanQuery {
  /** the disk or file written over; default the system's target_disk */
  targetDisk?: string;
  /** disk id → where that (data) disk of the image goes */
  dataDisks?: Record<string, string>;
  cacheDir: string;
  logDir: string;
  boot: BootAction;
  dryRun?: boolean;
  force?: boolean;
  /**
   * An update of a machine written before: only the system disk(s) and the config partition
   * are written; data disks are never touched (--data-disk may name other system disks only)
   */
  update?: boolean;
  /**
   * the target is a disk this machine runs from: switch into the provisioning ramdisk (kexec),
   * which writes it (via-ramdisk.ts); `boot: 'reboot'` switches at once
   */
  viaRamdisk?: boolean;
  /** the server's public key (--trust), handed to the ramdisk */
  trustKey?: string;
}

export interface WrittenDisk {
  id: string;
  use: PlanDisk['use'];
  format: string;
  sha256?: string;
  /** the image's size of the disk, bytes */
  size: number;
  /** where it goes; absent when it is skipped */
  target?: string;
  /** what the target held before (dry run, and the result) */
  before?: string[];
  targetSize?: number;
  /** raw: streamed; other formats: through the cache and qemu-img convert */
  method?: 'stream' | 'convert';
  written?: number;
  skippedZeros?: number;
  verified?: boolean;
  /** why the disk was not written */
  skipped?: string;
}

export interface ReplaceSelfResult {
  vm: string;
  image: string;
  record: string;
  system?: string;
  hostname: string;
  instanceId: string;
  target: string;
  disks: WrittenDisk[];
  configPartition?: ConfigPartition;
  /** --via-ramdisk: what was loaded, and whether the machine switched */
  ramdisk?: RamdiskSwitch;
  logFile: string;
  boot: { action: BootAction; done: boolean; message: string };
  dryRun: boolean;
  /**
   * Dry run only: why a real run would be refused (in use, too small, not empty). The summary is
   * still shown; the agent then exits with this error's code.
   */
  refused?: ImgctlError;
}

/** The whole --replace-self flow. Throws ImgctlError with the code of design.md §4 on failure. */
export async function replaceSelf(
  options: ReplaceSelfOptions,
  deps: ReplaceSelfDeps,
): Promise<ReplaceSelfResult> {
  const { runner, client } = deps;
  // getPlan reads only the PlanQuery fields of the options
  const { plan } = await client.getPlan(options);
  warnIfDeprecated(plan, deps.log);
  const vm = assertName('system', plan.vm_name);
  const targetPath = options.targetDisk ?? plan.target_disk;
  if (targetPath === undefined)
    throw new ImgctlError('USAGE', 'no target disk: give --target-disk DEV|FILE', {
      hint: `or set target_disk in the system${plan.system ? ` ${plan.system}` : ''}`,
    });
  const disks = assignDisks(plan, targetPath, options.dataDisks ?? {}, Boolean(options.update));
  for (const d of disks)
    if (d.target !== undefined)
      assertPullable(
        plan,
        plan.disks.find((p) => p.id === d.id)!,
      );

  // Every target checked before anything is written: in use, size, what is on it.
  const named = plan.target_disk === undefined ? undefined : await resolved(plan.target_disk, deps);
  const inspected = new Map<string, TargetInfo>();
  let refused: ImgctlError | undefined;
  for (const d of disks) {
    if (d.target === undefined) continue;
    const info = await inspectTarget(d.target, { runner, tables: deps.tables, fs: deps.fs });
    for (const [id, other] of inspected) checkSeparate([id, other], [d.id, info]);
    inspected.set(d.id, info);
    const system = d.use === 'system';
    try {
      // through the ramdisk, a disk this machine runs from is written once nothing runs from it
      checkTarget(options.viaRamdisk ? { ...info, inUse: [] } : info, {
        needBytes: d.size + (system ? CONFIG_PARTITION_ROOM : 0),
        needWhat: system
          ? `the image's ${formatSize(d.size)} disk ${d.id} and its ${formatSize(CONFIG_PARTITION_BYTES)} config partition`
          : `the image's ${formatSize(d.size)} disk ${d.id}`,
        namedBySystem: system && named === info.realPath,
        force: Boolean(options.force),
      });
    } catch (error) {
      // A dry run shows every target first, then says why the run would be refused.
      if (!options.dryRun || !(error instanceof ImgctlError)) throw error;
      refused ??= error;
    }
    d.before = describeContent(info);
    d.targetSize = info.size;
    d.method = d.format === 'raw' ? 'stream' : 'convert';
  }
  const systemTarget = inspected.get(disks[0]!.id)!;
  if (options.viaRamdisk) checkViaRamdisk(options, systemTarget);
  if (options.boot !== 'none' && systemTarget.kind === 'file')
    throw new ImgctlError(
      'USAGE',
      `--${options.boot}: the target ${targetPath} is a file, which this machine does not boot from`,
      { hint: 'write to a disk of this machine, or boot the file in a VM' },
    );

  const instanceId = `${vm}-${deps.randomHex(4)}`;
  const logFile = join(options.logDir, plan.image.name, `${plan.image.name}_${vm}.log`);
  const result: ReplaceSelfResult = {
    vm,
    image: plan.image.name,
    record: plan.record,
    system: plan.system,
    hostname: plan.hostname,
    instanceId,
    target: targetPath,
    disks,
    logFile,
    boot: { action: options.boot, done: false, message: '' },
    dryRun: Boolean(options.dryRun),
  };
  for (const d of disks)
    if (d.skipped) deps.log(`warning: disk ${d.id} (${d.use}) is not written: ${d.skipped}`);
  if (options.dryRun) {
    const ramdisk = options.viaRamdisk ? await ramdiskDryRun(plan, runner) : undefined;
    result.boot.message = ramdisk?.message ?? nextBootNotice(plan, systemTarget, options.boot);
    refused ??= ramdisk?.refused;
    if (refused) result.refused = refused;
    return result;
  }

  if (options.viaRamdisk) {
    const { getRamdisk, issueBootToken } = deps.client;
    if (!getRamdisk || !issueBootToken)
      throw new Error('--via-ramdisk: the client has no ramdisk calls');
    result.ramdisk = await switchViaRamdisk(
      plan,
      {
        cacheDir: options.cacheDir,
        targetDisk: targetPath,
        target: systemTarget,
        trustKey: options.trustKey,
        switchNow: options.boot === 'reboot',
      },
      deps,
    );
    result.boot.done = result.ramdisk.switched;
    const { switched, via } = result.ramdisk;
    result.boot.message = switched
      ? `${via === 'kexec' ? 'switched' : 'rebooting'} into the provisioning ramdisk`
      : via === 'kexec'
        ? 'the provisioning ramdisk is loaded: `systemctl kexec` (or `kexec -e`) switches into it, and it writes the disk'
        : 'the next boot (only) starts the provisioning ramdisk from GRUB, and it writes the disk: reboot to begin';
    return result;
  }

  const events = eventSender(deps, plan, vm);
  const source = mirroredDownloader(plan, deps.client, deps.mirrors, deps.log);
  let work: string | undefined;
  // Set once the system disk is written, until it is configured: a failure in between makes it
  // unbootable again, so it never boots the image without its configuration.
  let unconfigured = false;
  try {
    await events.send('started');
    for (const d of disks) {
      if (d.target === undefined) continue;
      deps.signal?.throwIfAborted();
      const info = inspected.get(d.id)!;
      const disk = plan.disks.find((p) => p.id === d.id)!;
      await writeDisk(d, disk, info, options, deps, source);
      if (d === disks[0]) unconfigured = true;
    }
    await events.send('disks-ready');

    work = await mkdtemp(join(deps.tmpDir, 'imgagent-'));
    const seedFiles = renderSeed(plan, {
      instanceId,
      passwordHashes: await passwordHashes(plan, runner),
      extraUserData: { imgctl: publicParameters(plan) },
    });
    result.configPartition = await addConfigPartition(systemTarget.realPath, seedFiles, {
      runner,
      diskSize: systemTarget.size,
      tmpDir: work,
      path: deps.scriptEnv.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    });
    deps.log(
      `added config partition ${result.configPartition.number} (vfat 'cidata', ${formatSize(result.configPartition.size)}) to the ${result.configPartition.table} table of ${targetPath}`,
    );
    if (systemTarget.kind === 'block') {
      // Let the kernel see the new table (a loop device without partscan says no: harmless).
      await runner.run('blockdev', ['--rereadpt', systemTarget.realPath]).catch(() => undefined);
    }
    await runProvisioning(
      plan,
      { work, logFile, env: { TARGET_DISK: systemTarget.realPath } },
      deps,
    );
    await events.send('configured');
    unconfigured = false;

    result.boot.message = nextBootNotice(plan, systemTarget, options.boot);
    if (options.boot === 'kexec') {
      const kexec = await prepareKexec(systemTarget.realPath, work, deps);
      if ('reason' in kexec) {
        result.boot.message = `kexec is not possible: ${kexec.reason}. ${result.boot.message}`;
        await events.send('done');
        return result;
      }
      await events.send('done');
      deps.log(`kexec: booting ${kexec.kernel} from ${targetPath}`);
      result.boot = { action: 'kexec', done: true, message: `kexec into ${kexec.kernel}` };
      await kexecNow(runner);
      return result;
    }
    await events.send('done');
    if (options.boot === 'reboot') {
      deps.log(`rebooting into ${plan.image.name} on ${targetPath}`);
      await rebootNow(runner);
      result.boot.done = true;
    }
    return result;
  } catch (error) {
    const failure = interrupted(deps) ?? asImgctlError(error, TARGET_FULL);
    if (unconfigured) {
      const erased = await eraseHead(systemTarget.realPath, systemTarget.size).then(
        () => `its first MiB was zeroed again, so ${targetPath} does not boot half-configured`,
        (e: unknown) =>
          `zeroing its first MiB again failed (${(e as Error).message}): ${targetPath} may boot without its configuration`,
      );
      failure?.details.push(`the system disk was written but not configured: ${erased}`);
    }
    throw await events.failed(error, failure);
  } finally {
    if (work) await rm(work, { recursive: true, force: true });
  }
}

/**
 * Where each disk of the plan goes: the first system disk (the boot entry's first drive when it
 * names one) to the target; disks named by --data-disk to theirs; the rest are skipped. An
 * update keeps data disks: naming one is refused.
 */
function assignDisks(
  plan: PlanDoc,
  targetPath: string,
  dataDisks: Record<string, string>,
  update: boolean,
): WrittenDisk[] {
  for (const id of Object.keys(dataDisks))
    if (!plan.disks.some((d) => d.id === id))
      throw new ImgctlError(
        'USAGE',
        `--data-disk ${id}=…: ${plan.image.name} has no disk '${id}'`,
        {
          hint: `its disks: ${plan.disks.map((d) => d.id).join(', ')}`,
        },
      );
  const bootDisk = plan.boot[0]?.drives?.[0]?.disk;
  const system =
    plan.disks.find((d) => d.id === bootDisk && d.use === 'system') ??
    plan.disks.find((d) => d.use === 'system');
  if (!system)
    throw new ImgctlError('VALIDATION', `${plan.image.name} has no system disk to write`);
  if (dataDisks[system.id] !== undefined)
    throw new ImgctlError(
      'USAGE',
      `--data-disk ${system.id}: that is the system disk (--target-disk)`,
    );
  const kept = plan.disks.filter((d) => d.use === 'data' && dataDisks[d.id] !== undefined);
  if (update && kept.length > 0)
    throw new ImgctlError(
      'USAGE',
      `--update never writes a data disk: ${kept.map((d) => `--data-disk ${d.id}`).join(', ')} would`,
      { hint: 'an update keeps the data disks as they are; leave --data-disk out for them' },
    );
  const ordered = [system, ...plan.disks.filter((d) => d !== system)];
  return ordered.map((disk): WrittenDisk => {
    const entry: WrittenDisk = {
      id: disk.id,
      use: disk.use,
      format: disk.format,
      sha256: disk.sha256,
      size: disk.image_size,
    };
    if (disk === system) entry.target = targetPath;
    else if (disk.use === 'scratch') entry.skipped = 'a scratch disk has no content';
    else if (dataDisks[disk.id] !== undefined) entry.target = dataDisks[disk.id];
    else if (update && disk.use === 'data')
      entry.skipped = 'kept: an update leaves data disks as they are';
    else entry.skipped = `no --data-disk ${disk.id}=DEV given`;
    return entry;
  });
}

async function resolved(path: string, deps: ReplaceSelfDeps): Promise<string | undefined> {
  try {
    return await (deps.fs?.realpath ?? realpath)(path);
  } catch {
    return undefined;
  }
}

/**
 * One disk onto its target, then read back and checked. Raw: streamed from the server (no
 * temporary copy); other formats: pulled into the cache, then `qemu-img convert -O raw -n`.
 * A failure part-way says the target is incomplete: it has no partition table (the first MiB
 * is written last), so it does not boot half-written.
 */
async function writeDisk(
  d: WrittenDisk,
  disk: PlanDisk,
  info: TargetInfo,
  options: ReplaceSelfOptions,
  deps: ReplaceSelfDeps,
  source: ReplaceSelfClient,
): Promise<void> {
  const hex = disk.sha256!;
  const where = info.path;
  let writer: TargetWriter | undefined;
  // Held open (a block device exclusively) from before the first byte changes to the end.
  let held: FileHandle | undefined;
  // Once the target's first MiB may have changed, a failure zeroes it again (a system disk then
  // does not boot; nothing else of the target was promised).
  let touched = false;
  let readFromDisk = false;
  try {
    if (d.method === 'stream') {
      held = await openForWriting(info);
      touched = true;
      writer = await openTargetWriter(info, held, disk.image_size, deps.runner);
      held = undefined; // the writer's to close now
      deps.log(
        `writing disk ${d.id} sha256:${short(hex)} (${humanSize(disk.image_size)}) onto ${where}${writer.skipsZeros ? ', skipping zero blocks' : ''}`,
      );
      const streamed = await source.streamBlob(hex, writer, {
        signal: deps.signal,
        onProgress: progressLogger(deps, disk, 'writing'),
      });
      if (streamed.size !== disk.image_size)
        throw new ImgctlError(
          'INTEGRITY',
          `blob sha256:${hex} is ${streamed.size} bytes, the image says ${disk.image_size}`,
        );
      const back = await writer.finish();
      d.written = writer.stats.written;
      d.skippedZeros = writer.stats.skipped;
      readFromDisk = writer.stats.readFromDisk ?? false;
      if (back !== hex)
        throw new ImgctlError(
          'INTEGRITY',
          `disk ${d.id} read back from ${where} does not match its sha256 (got ${back})`,
          { hint: 'the target may be failing; check its health (dmesg, smartctl)' },
        );
    } else {
      const cache = openBlobCache(options.cacheDir);
      const pulled = await cache.ensure(hex, source, {
        signal: deps.signal,
        onProgress: progressLogger(deps, disk),
        onWait: (pid) =>
          deps.log(`waiting for agent ${pid}, which is pulling sha256:${short(hex)}`),
      });
      deps.log(`converting disk ${d.id} (${disk.format}) onto ${where}`);
      // As for a raw stream, the first MiB goes last: zeroed first, so a conversion cut short
      // leaves no partition table; then everything after it; then it.
      const head = Math.min(HEAD_BYTES, disk.image_size);
      const targetFile = {
        driver: info.kind === 'block' ? 'host_device' : 'file',
        filename: info.realPath,
      };
      const convert = (offset: number, size: number) => {
        const range = { driver: 'raw', offset, size };
        const from = {
          ...range,
          file: { driver: disk.format, file: { driver: 'file', filename: pulled.path } },
        };
        const to = { ...range, file: targetFile };
        return run(
          deps.runner,
          'qemu-img',
          [
            'convert',
            '-n',
            '-O',
            'raw',
            `json:${JSON.stringify(from)}`,
            `json:${JSON.stringify(to)}`,
          ],
          `writing disk ${d.id} onto ${where}`,
          { signal: deps.signal },
          TARGET_FULL,
        );
      };
      held = await openForWriting(info);
      touched = true;
      await eraseHead(info.realPath, head);
      if (disk.image_size > head) await convert(head, disk.image_size - head);
      await run(deps.runner, 'sync', [info.realPath], `syncing ${where}`);
      await convert(0, head);
      await run(deps.runner, 'sync', [info.realPath], `syncing ${where}`);
      d.written = disk.image_size;
      readFromDisk = await dropCachedPages(info.realPath, deps.runner);
      const view = JSON.stringify({ driver: 'raw', size: disk.image_size, file: targetFile });
      await run(
        deps.runner,
        'qemu-img',
        ['compare', '-q', '-f', disk.format, pulled.path, `json:${view}`],
        `disk ${d.id} read back from ${where} differs from the image`,
      ).catch((error: unknown) => {
        throw new ImgctlError('INTEGRITY', (error as Error).message, { cause: error });
      });
    }
    d.verified = true;
    deps.log(
      `disk ${d.id} written onto ${where} and verified${d.skippedZeros ? ` (${humanSize(d.skippedZeros)} of zeros skipped)` : ''}`,
    );
    if (!readFromDisk)
      deps.log(
        `warning: disk ${d.id} was read back from the page cache, not from ${where}: this dd has no iflag=nocache (GNU coreutils has)`,
      );
  } catch (error) {
    await writer?.abort().catch(() => undefined);
    // Not one byte changed (the target became busy, the pull failed): the error says it all.
    if (!touched) throw interrupted(deps) ?? error;
    if (d.use === 'system')
      await eraseHead(info.realPath, Math.min(HEAD_BYTES, disk.image_size)).catch(() => undefined);
    const failure = interrupted(deps) ?? asImgctlError(error, TARGET_FULL);
    if (!failure) throw error;
    throw new ImgctlError(failure.code, failure.message, {
      cause: error,
      details: [
        ...failure.details,
        `target disk ${where} is incomplete: disk ${d.id} was not fully written${d.use === 'system' ? ' and it will not boot' : ''}`,
      ],
      hint:
        failure.code === 'INTEGRITY'
          ? (failure.hint ?? "the server's copy may be corrupt (imgctl verify on the server)")
          : 'run the same command again: it writes the disk from the start',
    });
  } finally {
    await held?.close().catch(() => undefined);
  }
}

/** What the next boot does, in a sentence or two. */
function nextBootNotice(plan: PlanDoc, target: TargetInfo, action: BootAction): string {
  const what = `${plan.image.name}@${plan.image.revision} as ${plan.hostname}`;
  if (target.kind === 'file')
    return `${target.path} is a file: it boots ${what} wherever it is attached as a disk (a VM, or written to one)`;
  const firmware = plan.boot[0]?.firmware ?? 'bios';
  const text = `the next boot from ${target.path} starts ${what} (${firmware} firmware); this machine boots from it only if ${target.path} comes first in its firmware's boot order`;
  if (action === 'none') return `${text}; nothing was rebooted (give --reboot or --kexec)`;
  return text;
}
