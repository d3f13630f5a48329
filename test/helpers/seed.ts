/**
 * Test helpers around the tiny appliance (image-store/images/tiny-linux): NoCloud seeds (an ISO,
 * or a vfat whole disk, labelled cidata), building the appliance with a download cache shared by
 * every test run, and booting it with qemu (software emulation) up to its power-off.
 * The agent's own seed code lives in core; these are for tests.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { parse } from 'yaml';
import { copyExampleStore, execImgctl, REPO_ROOT, type TempDir } from './index.ts';

export interface SeedOptions {
  /** where the seed file (and its source files) go */
  dir: string;
  instanceId: string;
  hostname: string;
  /** user-data; default `#cloud-config` with the hostname */
  userData?: string;
}

/** Writes DIR/seed-src/{meta-data,user-data}; returns that directory. */
async function writeSeedFiles(options: SeedOptions): Promise<string> {
  const src = join(options.dir, 'seed-src');
  await mkdir(src, { recursive: true });
  await writeFile(
    join(src, 'meta-data'),
    `instance-id: ${options.instanceId}\nlocal-hostname: ${options.hostname}\n`,
  );
  await writeFile(
    join(src, 'user-data'),
    options.userData ?? `#cloud-config\nhostname: ${options.hostname}\n`,
  );
  return src;
}

/** A NoCloud seed ISO (iso9660, volume id `cidata`) made with genisoimage: DIR/seed.iso. */
export async function makeSeedIso(options: SeedOptions): Promise<string> {
  const src = await writeSeedFiles(options);
  const iso = join(options.dir, 'seed.iso');
  await execa('genisoimage', [
    '-quiet',
    '-output',
    iso,
    '-volid',
    'cidata',
    '-joliet',
    '-rock',
    join(src, 'user-data'),
    join(src, 'meta-data'),
  ]);
  return iso;
}

/** A NoCloud seed on a whole disk without a partition table: a 4 MiB vfat labelled CIDATA, DIR/seed.vfat. */
export async function makeSeedVfat(options: SeedOptions): Promise<string> {
  const src = await writeSeedFiles(options);
  const disk = join(options.dir, 'seed.vfat');
  await execa('truncate', ['-s', '4M', disk]);
  await execa('mkfs.vfat', ['-n', 'CIDATA', disk]);
  await execa('mcopy', ['-i', disk, join(src, 'meta-data'), join(src, 'user-data'), '::/'], {
    env: { MTOOLS_SKIP_CHECK: '1' },
  });
  return disk;
}

/** The build's download cache kept between test runs, so the appliance rebuilds in seconds. */
export const APPLIANCE_BUILD_CACHE = join(REPO_ROOT, 'node_modules', '.cache', 'imgctl-build');

/** `imgctl build tiny-linux` in `storeDir` (a copy of the example store), with the shared cache. */
export async function buildAppliance(storeDir: string, args: string[] = []) {
  return execImgctl(['--store', storeDir, 'build', 'tiny-linux', ...args], {
    env: { IMGCTL_BUILD_CACHE: APPLIANCE_BUILD_CACHE },
  });
}

export interface BuiltAppliance {
  /** a copy of the example store with the appliance built in it */
  store: TempDir;
  /** the built image's disks, as its image.yaml lists them */
  disks: Array<{ id: string; format: string; sha256: string }>;
  /** the built image's revision */
  revision: string;
}

/** A copy of the example store with the appliance built in it; the caller cleans it up. */
export async function buildApplianceStore(): Promise<BuiltAppliance> {
  const store = await copyExampleStore();
  const build = await buildAppliance(store.dir);
  if (build.exitCode !== 0) {
    await store.cleanup();
    throw new Error(`imgctl build tiny-linux failed:\n${build.stderr}`);
  }
  const image = parse(await readFile(join(store.dir, 'images/tiny-linux/image.yaml'), 'utf8')) as {
    disks: BuiltAppliance['disks'];
    revision: number;
  };
  return { store, disks: image.disks, revision: String(image.revision) };
}

/**
 * `IMGCTL-APPLIANCE key=value …` parsed from a serial log, or undefined when absent or not yet
 * ended by its newline (a log read while the VM is still writing the line).
 */
export function applianceReport(serial: string): Record<string, string> | undefined {
  const line = /IMGCTL-APPLIANCE( [a-z-]+=\S*)+(?=\r?\n)/.exec(serial)?.[0];
  if (line === undefined) return undefined;
  return Object.fromEntries(
    line
      .split(' ')
      .slice(1)
      .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
  );
}

/** Waits for the appliance's report line in a serial log file (a VM libvirt runs). */
export async function waitForApplianceReport(
  serialLog: string,
  timeoutMs = 240_000,
): Promise<Record<string, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(serialLog, 'utf8').catch(() => '');
    const report = applianceReport(text);
    if (report) return report;
    if (Date.now() > deadline)
      throw new Error(`no appliance report in ${serialLog} after ${timeoutMs} ms:\n${text}`);
    await sleep(250);
  }
}

export interface BootOptions {
  /** virtio disks in order (vda, vdb, …): system disk, data disk, others */
  disks: Array<{ file: string; format: 'raw' | 'qcow2' }>;
  cdrom?: string;
  /** where the serial console goes */
  serialLog: string;
  timeoutMs?: number;
}

/**
 * Boots with qemu-system-x86_64 (TCG, 256 MiB, no reboot) and waits for the appliance to power
 * off; returns the serial console output. Killed, and an error thrown, after `timeoutMs`.
 */
export async function bootAppliance(options: BootOptions): Promise<string> {
  const args = ['-accel', 'tcg', '-m', '256', '-nographic', '-no-reboot', '-monitor', 'none'];
  for (const disk of options.disks)
    args.push('-drive', `file=${disk.file},format=${disk.format},if=virtio`);
  if (options.cdrom) args.push('-cdrom', options.cdrom);
  args.push('-serial', `file:${options.serialLog}`);
  const run = await execa('qemu-system-x86_64', args, {
    reject: false,
    timeout: options.timeoutMs ?? 180_000,
    stdin: 'ignore',
  });
  const serial = await readFile(options.serialLog, 'utf8').catch(() => '');
  if (run.timedOut || run.exitCode !== 0) {
    throw new Error(
      `qemu ${run.timedOut ? 'timed out' : `exited ${run.exitCode}`}: ${run.stderr}\nserial:\n${serial}`,
    );
  }
  return serial;
}
