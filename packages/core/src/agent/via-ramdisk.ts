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
  /** disk id → device, for the image's data disks */
  dataDisks: Record<string, string>;
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
  /** the copy of the initrd with the instructions in it (mode 0600: it holds the token) */
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
  const grub = await findGrub(runner, bootDir);
  if (!kexec && grub === undefined)
    throw new ImgctlError(
      'HOST',
      'this machine cannot switch into the ramdisk: kexec is missing, and it does not boot with a GRUB that takes a one-time entry',
      { hint: 'install kexec-tools (apt-get install kexec-tools); nothing was changed' },
    );
  return { kexec, grub };
}

/** What a dry run says about switching into the ramdisk, or why it would be refused. */
export async function ramdiskDryRun(
  runner: StepDeps['runner'],
  bootDir?: string,
): Promise<{ message: string; refused?: ImgctlError }> {
  try {
    const { kexec } = await switchMethod(runner, bootDir);
    return {
      message: `this machine would switch into the provisioning ramdisk ${kexec ? 'with kexec' : 'through a one-time GRUB entry'}, which writes the disk`,
    };
  } catch (error) {
    if (!(error instanceof ImgctlError)) throw error;
    return { message: error.message, refused: error };
  }
}

/** Pulls the ramdisk, stages the instructions, loads it with kexec and, when asked, switches. */
export async function switchViaRamdisk(
  plan: PlanDoc,
  options: ViaRamdiskOptions,
  deps: StepDeps & { client: RamdiskClient },
): Promise<RamdiskSwitch> {
  const system = plan.system;
  if (system === undefined)
    throw new ImgctlError('USAGE', '--via-ramdisk needs a system: give --system NAME', {
      hint: "the ramdisk plans again from the system's record, with a token for that system only",
    });
  const { runner } = deps;
  const { kexec, grub } = await switchMethod(runner, options.bootDir);
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
  const instructions = [
    `server=${deps.client.baseUrl}`,
    `system=${system}`,
    `image=${plan.image.release ?? plan.image.name}`,
    `record=${plan.record}`,
    `target_disk=${options.targetDisk}`,
    ...Object.entries(options.dataDisks).map(([id, dev]) => `data_disk=${id}=${dev}`),
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
  let entry: BootOnceEntry | undefined;
  try {
    if (kexec) {
      const refused = await loadKexec(loaded, grub, deps);
      if (refused)
        entry = await addBootOnceEntry(
          refused,
          { ...loaded, initrd: staged },
          runner,
          options.bootDir,
        );
    } else
      entry = await addBootOnceEntry(grub!, { ...loaded, initrd: staged }, runner, options.bootDir);
  } catch (error) {
    await rm(staged, { force: true });
    throw error;
  }
  const via = entry ? 'boot-entry' : 'kexec';
  deps.log(
    entry
      ? `added the GRUB entry '${entry.entry}' to ${entry.config} for the next boot only (grub-reboot)`
      : `loaded the provisioning ramdisk for ${system} with kexec`,
  );
  if (!options.switchNow) return { ...loaded, via, entry, switched: false };
  deps.log(
    entry
      ? 'rebooting into the ramdisk: it writes the disk and reboots into it'
      : 'switching into the ramdisk (kexec): it writes the disk and reboots into it',
  );
  await (entry ? rebootNow(runner) : kexecNow(runner));
  return { ...loaded, via, entry, switched: true };
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
