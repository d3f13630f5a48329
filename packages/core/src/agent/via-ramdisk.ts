/**
 * `imgagent --replace-self --via-ramdisk` (docs/netboot.md, "Reinstalling a running machine"):
 * the target is a disk this machine runs from, so it cannot be written from here. Once
 * replace-self.ts has checked everything that can be checked now (the plan and its signature, a
 * revoked release, the host, the target's size and what is on it), this pulls the provisioning
 * ramdisk the server offers into the blob cache (verified by digest), asks the server for a
 * one-time token for this system only, stages the instructions into a copy of the initrd, and
 * loads it with kexec; with --reboot it switches at once. The ramdisk writes the disk while
 * nothing is mounted from it, posts the events and reboots into the written system.
 */
import { join } from 'node:path';
import { readFile, rm } from 'node:fs/promises';
import { ImgctlError } from '../util/errors.ts';
import { ensureDir } from '../store/store.ts';
import type { PlanDoc } from '../store/types.ts';
import type { Client } from '../client/client.ts';
import { openBlobCache } from './blob-cache.ts';
import { stageIntoInitrd } from './initrd-stage.ts';
import { run, short, type StepDeps } from './steps.ts';

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
  /** switch now (kexec -e); otherwise the ramdisk is loaded for the next `kexec -e` */
  switchNow: boolean;
}

export interface RamdiskSwitch {
  kernel: string;
  initrd: string;
  /** the copy of the initrd with the instructions in it (mode 0600: it holds the token) */
  staged: string;
  /** the kernel command line, as loaded */
  cmdline: string;
  switched: boolean;
}

/** Where the staged instructions are inside the ramdisk; its init reads them (KEY=VALUE lines). */
export const INSTRUCTIONS_PATH = 'imgctl/instructions';

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
  try {
    await runner.run('kexec', ['--version']);
  } catch {
    throw new ImgctlError('HOST', 'this machine cannot switch into the ramdisk: kexec is missing', {
      hint: 'install kexec-tools (apt-get install kexec-tools); nothing was changed',
    });
  }
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
  try {
    await run(
      runner,
      'kexec',
      ['-l', kernel, `--initrd=${staged}`, `--command-line=${cmdline}`],
      'loading the ramdisk with kexec',
    );
  } catch (error) {
    await rm(staged, { force: true });
    throw error;
  }
  deps.log(`loaded the provisioning ramdisk for ${system} with kexec`);
  if (!options.switchNow) return { kernel, initrd, staged, cmdline, switched: false };
  await run(runner, 'sync', [], 'sync');
  deps.log('switching into the ramdisk (kexec -e): it writes the disk and reboots into it');
  await run(runner, 'kexec', ['-e'], 'kexec -e');
  return { kernel, initrd, staged, cmdline, switched: true };
}
