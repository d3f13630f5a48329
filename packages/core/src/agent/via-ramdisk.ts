/**
 * `imgagent --replace-self --via-ramdisk` (docs/netboot.md, "Reinstalling a running machine"):
 * the target is a disk this machine runs from, so it cannot be written from here. Once
 * replace-self.ts has checked everything that can be checked now (the plan and its signature, a
 * revoked release, the host, the target's size and what is on it), this checks the machine can
 * switch (kexec, else a GRUB one-time boot entry: boot-once.ts), pulls the provisioning ramdisk
 * the server offers into the blob cache (verified by digest), asks the server for a one-time
 * token for this system only, stages the instructions into a copy of the initrd, and loads it;
 * with --reboot it switches at once. The ramdisk writes the disk while nothing is mounted from
 * it, posts the events and reboots into the written system.
 */
import { join } from 'node:path';
import { readFile, rm } from 'node:fs/promises';
import { ImgctlError } from '../util/errors.ts';
import { ensureDir } from '../store/store.ts';
import type { PlanDoc } from '../store/types.ts';
import type { Client } from '../client/client.ts';
import { openBlobCache } from './blob-cache.ts';
import type { TargetInfo } from './target-disk.ts';
import { stageIntoInitrd } from './initrd-stage.ts';
import { addBootOnceEntry, type BootOnceEntry, findGrub, type Grub } from './boot-once.ts';
import { kexecNow, rebootNow, run, short, type StepDeps } from './steps.ts';

export type RamdiskClient = Pick<
  Client,
  'baseUrl' | 'downloadBlob' | 'getRamdisk' | 'issueBootToken'
>;

export interface ViaRamdiskOptions {
  cacheDir: string;
  /** the disk the ramdisk writes, as this machine names it */
  targetDisk: string;
  /** what it is: the ramdisk finds it by its partition table's identifier and its size */
  target: Pick<TargetInfo, 'realPath' | 'size'>;
  /** the server's public key the agent trusts: the ramdisk checks plans with it too */
  trustKey?: string;
  /** switch now; otherwise the ramdisk is loaded for the next `kexec -e`, or the next boot */
  switchNow: boolean;
  /** where GRUB's files are (tests) */
  bootDir?: string;
}

export interface RamdiskSwitch {
  kernel: string;
  initrd: string;
  /** where the initrd with the instructions was staged (0600: it holds the token); removed once loaded or copied */
  staged: string;
  /** the kernel command line, as loaded */
  cmdline: string;
  /** how: loaded with kexec, or a GRUB entry for the next boot only (kexec unavailable) */
  via: 'kexec' | 'boot-entry';
  /** the GRUB entry, when via a boot entry */
  entry?: BootOnceEntry;
  switched: boolean;
}

/** Where the staged instructions are inside the ramdisk; its init reads them (KEY=VALUE lines). */
export const INSTRUCTIONS_PATH = 'imgctl/instructions';

/**
 * What `--via-ramdisk` cannot do, refused before anything: a file target, `--kexec` (it switches
 * itself), and what the ramdisk would not get: `--set`, `--update`, data disks (the ramdisk's
 * kernel may name disks otherwise).
 */
export function checkViaRamdisk(
  options: { sets?: string[]; update?: boolean; dataDisks?: Record<string, string>; boot: string },
  target: Pick<TargetInfo, 'kind' | 'path'>,
): void {
  const refused =
    target.kind === 'file'
      ? `the target ${target.path} is a file; the ramdisk writes disks of this machine`
      : options.boot === 'kexec'
        ? 'it switches with kexec itself: give --reboot (switch now) or neither'
        : (options.sets ?? []).length > 0
          ? '--set is not passed to the ramdisk, which plans again from the system: set the values in the system or its record'
          : options.update
            ? '--update is not possible through the ramdisk: it writes the whole disk'
            : Object.keys(options.dataDisks ?? {}).length > 0
              ? '--data-disk is not passed to the ramdisk, whose kernel may name the disks otherwise'
              : undefined;
  if (refused) throw new ImgctlError('USAGE', `--via-ramdisk: ${refused}`);
}

/**
 * The identifier of the target's partition table (MBR disk id or GPT GUID): what the ramdisk
 * finds it by. A disk without a partition table cannot be found again: refused.
 */
async function targetDiskId(device: string, runner: StepDeps['runner']): Promise<string> {
  const id = await runner.run('sfdisk', ['--disk-id', device]).then(
    (r) => r.stdout.trim(),
    () => '',
  );
  if (!/^(0x[0-9a-f]{8}|[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})$/i.test(id))
    throw new ImgctlError(
      'HOST',
      `${device} has no partition table identifier: the ramdisk could not tell it from other disks`,
      {
        hint: 'nothing was changed; a running system disk without a partition table cannot be replaced through the ramdisk',
      },
    );
  return id;
}

/**
 * How this machine can switch into the ramdisk: kexec, else GRUB's one-time entry (which is also
 * the way in when the kernel refuses to load one). HOST error when neither: nothing is changed.
 */
export async function switchMethod(
  runner: StepDeps['runner'],
  bootDir?: string,
): Promise<{ kexec: boolean; grub?: Grub }> {
  const kexec = await runner.run('kexec', ['--version']).then(
    () => true,
    () => false,
  );
  const found = await findGrub(runner, bootDir);
  const grub = 'reason' in found ? undefined : found;
  if (!kexec && grub === undefined)
    throw new ImgctlError(
      'HOST',
      `this machine cannot switch into the ramdisk: kexec is missing, and no one-time GRUB entry (${(found as { reason: string }).reason})`,
      { hint: 'install kexec-tools (apt-get install kexec-tools); nothing was changed' },
    );
  return { kexec, grub };
}

/** What a dry run says about switching into the ramdisk, or why it would be refused. */
export async function ramdiskDryRun(
  plan: Pick<PlanDoc, 'system'>,
  runner: StepDeps['runner'],
  bootDir?: string,
): Promise<{ message: string; refused?: ImgctlError }> {
  try {
    needSystem(plan);
    const { kexec } = await switchMethod(runner, bootDir);
    return {
      message: `this machine would switch into the provisioning ramdisk ${kexec ? 'with kexec' : 'through a one-time GRUB entry'}, which writes the disk`,
    };
  } catch (error) {
    if (!(error instanceof ImgctlError)) throw error;
    return { message: error.message, refused: error };
  }
}

/** The system the ramdisk plans for: it gets a token for that system only. */
function needSystem(plan: Pick<PlanDoc, 'system'>): string {
  if (plan.system === undefined)
    throw new ImgctlError('USAGE', '--via-ramdisk needs a system: give --system NAME', {
      hint: "the ramdisk plans again from the system's record, with a token for that system only",
    });
  return plan.system;
}

/** Pulls the ramdisk, stages the instructions, loads it with kexec and, when asked, switches. */
export async function switchViaRamdisk(
  plan: PlanDoc,
  options: ViaRamdiskOptions,
  deps: StepDeps & { client: RamdiskClient },
): Promise<RamdiskSwitch> {
  const system = needSystem(plan);
  const { runner } = deps;
  const { kexec, grub } = await switchMethod(runner, options.bootDir);
  const diskId = await targetDiskId(options.target.realPath, runner);
  const ramdisk = await deps.client.getRamdisk();
  const cache = openBlobCache(options.cacheDir);
  const files: string[] = [];
  for (const part of [ramdisk.kernel, ramdisk.initrd]) {
    const pulled = await cache.ensure(part.sha256, deps.client, { signal: deps.signal });
    deps.log(
      `ramdisk ${part === ramdisk.kernel ? 'kernel' : 'initrd'}: sha256:${short(part.sha256)}${pulled.downloaded ? ', pulled and verified' : ' is in the cache'}`,
    );
    files.push(pulled.path);
  }
  const [kernel, initrd] = files as [string, string];

  // The token goes into the staged initrd only: never on a command line, never printed.
  const { token } = await deps.client.issueBootToken(system);
  // The ramdisk's kernel may name the disks otherwise (no udev there, no /dev/disk/by-id, sdX in
  // another order): it finds the target by what is on it, and writes it (force: checked here).
  const instructions = [
    `server=${deps.client.baseUrl}`,
    `system=${system}`,
    `image=${plan.image.release ?? plan.image.name}`,
    `record=${plan.record}`,
    `target_disk=${options.targetDisk}`,
    `target_disk_id=${diskId}`,
    `target_size=${options.target.size}`,
    'force=1',
    `token=${token}`,
  ];
  for (const line of instructions)
    if (/[\n\r\0]/.test(line)) throw new ImgctlError('USAGE', 'a value holds a line break');
  const stagedDir = join(options.cacheDir, 'ramdisk');
  await ensureDir(stagedDir, 0o700);
  const staged = join(stagedDir, `initrd-${system}.img`);
  await stageIntoInitrd(
    await readFile(initrd),
    [
      { path: INSTRUCTIONS_PATH, content: `${instructions.join('\n')}\n`, mode: 0o600 },
      ...(options.trustKey
        ? [{ path: 'imgctl/trust.pub', content: options.trustKey, mode: 0o644 }]
        : []),
    ],
    staged,
  );
  const cmdline = `${ramdisk.cmdline} imgctl.instructions=/${INSTRUCTIONS_PATH}`.trim();
  const loaded = { kernel, initrd, staged, cmdline };
  let entry: Awaited<ReturnType<typeof addBootOnceEntry>> | undefined;
  try {
    const viaGrub = kexec ? await loadKexec(loaded, grub, deps) : grub;
    if (viaGrub)
      entry = await addBootOnceEntry(
        viaGrub,
        { ...loaded, initrd: staged },
        runner,
        options.bootDir,
      );
  } finally {
    // loaded into the kernel, or copied for GRUB: the copy with the token is not needed here
    await rm(staged, { force: true });
  }
  const via = entry ? 'boot-entry' : 'kexec';
  const { undo, ...shown } = entry ?? {};
  const result = { ...loaded, via, ...(entry ? { entry: shown as BootOnceEntry } : {}) } as const;
  deps.log(
    entry
      ? `added the GRUB entry '${entry.entry}' to ${entry.config} for the next boot only (grub-reboot)`
      : `loaded the provisioning ramdisk for ${system} with kexec`,
  );
  if (!options.switchNow) return { ...result, switched: false };
  deps.log(
    entry
      ? 'rebooting into the ramdisk: it writes the disk and reboots into it'
      : 'switching into the ramdisk (kexec): it writes the disk and reboots into it',
  );
  try {
    await (entry ? rebootNow(runner) : kexecNow(runner));
  } catch (error) {
    // not rebooting: the entry must not surprise the next reboot
    await undo?.();
    throw error;
  }
  return { ...result, switched: true };
}

/**
 * `kexec -l`; when the kernel refuses it (lockdown) and GRUB can take a one-time entry, says
 * which GRUB to fall back to instead of failing.
 */
async function loadKexec(
  loaded: { kernel: string; staged: string; cmdline: string },
  grub: Grub | undefined,
  deps: StepDeps,
): Promise<Grub | undefined> {
  try {
    await run(
      deps.runner,
      'kexec',
      ['-l', loaded.kernel, `--initrd=${loaded.staged}`, `--command-line=${loaded.cmdline}`],
      'loading the ramdisk with kexec',
    );
    return undefined;
  } catch (error) {
    if (grub === undefined) throw error;
    deps.log(`warning: ${(error as Error).message}; a one-time GRUB entry instead`);
    return grub;
  }
}
