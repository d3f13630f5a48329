/**
 * The one-time boot entry `imgagent --replace-self --via-ramdisk` falls back to when this machine
 * cannot kexec (kexec-tools missing, or the kernel refuses to load one: lockdown under Secure
 * Boot). As koan does with its one-time entry: the ramdisk's kernel and its staged initrd are
 * copied to /boot/imgctl/, a GRUB menu entry that boots them goes into GRUB's custom.cfg
 * (between two marker lines; whatever else the file holds is kept), and `grub-reboot` makes it
 * the default for the next boot only. GRUB clears that choice as it boots the entry, so the
 * machine never loops into the ramdisk; the ramdisk then writes the disk the entry is on.
 */
import { chmod, copyFile, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { ensureDir } from '../store/store.ts';
import type { ProcessRunner as Runner } from '../util/process.ts';
import { run } from './steps.ts';

/** The GRUB menu entry's id, what `grub-reboot` is given. */
export const ENTRY_ID = 'imgctl-ramdisk';
const BEGIN = '### imgctl ramdisk: begin (imgagent --via-ramdisk; booted once, by grub-reboot)';
const END = '### imgctl ramdisk: end';

/** A GRUB this machine boots with: its tools' prefix (grub-… or grub2-…) and its config. */
export interface Grub {
  tools: 'grub' | 'grub2';
  /** grub.cfg; custom.cfg sits beside it */
  config: string;
}

export interface BootOnceEntry {
  loader: 'grub';
  /** the custom.cfg the entry was added to */
  config: string;
  kernel: string;
  initrd: string;
  entry: typeof ENTRY_ID;
}

/**
 * The GRUB this machine boots with — a grub.cfg that reads custom.cfg (GRUB's 41_custom) and the
 * tools that set a one-time default — or why it cannot take a one-time entry. GRUB clears the
 * one-time choice by writing its environment block as it boots the entry; it cannot write one on
 * LVM, RAID, btrfs or ZFS, and the machine would then boot the ramdisk every time: refused. So is
 * an EFI system whose GRUB reads a grub.cfg of its own on the EFI partition rather than this one.
 */
export async function findGrub(
  runner: Runner,
  bootDir = '/boot',
): Promise<Grub | { reason: string }> {
  for (const tools of ['grub', 'grub2'] as const) {
    const config = join(bootDir, tools, 'grub.cfg');
    const text = await readFile(config, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    if (!text.includes('custom.cfg'))
      return { reason: `${config} does not read custom.cfg (GRUB's 41_custom)` };
    const probe = async (target: string) =>
      (await runner.run(`${tools}-probe`, [`--target=${target}`, dirname(config)])).stdout.trim();
    try {
      await runner.run(`${tools}-reboot`, ['--version']);
      const abstraction = await probe('abstraction');
      const fs = await probe('fs');
      if (abstraction !== '' || fs === 'btrfs' || fs === 'zfs')
        return {
          reason: `${dirname(config)} is on ${abstraction || fs}, where GRUB cannot clear a one-time choice`,
        };
    } catch (error) {
      return { reason: `${tools}-reboot or ${tools}-probe failed: ${(error as Error).message}` };
    }
    const efi = await efiConfigElsewhere(bootDir);
    if (efi) return { reason: `GRUB reads ${efi} on the EFI partition, not ${config}` };
    return { tools, config };
  }
  return { reason: 'no GRUB configuration in /boot/grub or /boot/grub2' };
}

/**
 * An EFI partition's grub.cfg that is a configuration of its own (RHEL 7/8 layouts), not the
 * stub that loads BOOT's (`configfile …/grub.cfg`, as Debian installs).
 */
async function efiConfigElsewhere(bootDir: string): Promise<string | undefined> {
  const vendors = await readdir(join(bootDir, 'efi/EFI')).catch(() => [] as string[]);
  for (const vendor of vendors) {
    const file = join(bootDir, 'efi/EFI', vendor, 'grub.cfg');
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text !== undefined && !/^\s*configfile\s/m.test(text) && text.includes('menuentry'))
      return file;
  }
  return undefined;
}

/** GRUB script: one word, single-quoted (a single quote cannot be in one). */
function quote(word: string): string {
  if (word.includes("'") || /[\n\r\0]/.test(word))
    throw new ImgctlError('USAGE', `cannot put ${JSON.stringify(word)} into a GRUB menu entry`);
  return `'${word}'`;
}

/** custom.cfg's text with the entry this module adds removed (and nothing else). */
export function withoutEntry(text: string): string {
  const begin = text.indexOf(`${BEGIN}\n`);
  const end = text.indexOf(`${END}\n`, begin);
  if (begin < 0 || end < 0) return text;
  return text.slice(0, begin) + text.slice(end + END.length + 1);
}

/** The menu entry that boots the ramdisk, with the GRUB paths of its files. */
export function renderEntry(entry: {
  insmods: string[];
  fsUuid: string;
  kernel: string;
  initrd: string;
  cmdline: string;
}): string {
  const words = entry.cmdline.split(' ').filter(Boolean);
  return [
    BEGIN,
    `menuentry 'imgctl provisioning ramdisk' --id ${ENTRY_ID} {`,
    ...entry.insmods.map((m) => `\tinsmod ${quote(m)}`),
    `\tsearch --no-floppy --fs-uuid --set=root ${quote(entry.fsUuid)}`,
    `\tlinux ${[entry.kernel, ...words].map(quote).join(' ')}`,
    `\tinitrd ${quote(entry.initrd)}`,
    '}',
    END,
    '',
  ].join('\n');
}

/**
 * Copies the ramdisk to BOOT/imgctl/, adds its entry to custom.cfg and makes it the next boot's
 * default. When a step fails — or later, through `undo` (the reboot failed) — the entry is
 * taken out again (an older one of ours too), its files removed and the one-time choice unset.
 */
export async function addBootOnceEntry(
  grub: Grub,
  files: { kernel: string; initrd: string; cmdline: string },
  runner: Runner,
  bootDir = '/boot',
): Promise<BootOnceEntry & { undo(): Promise<void> }> {
  const dir = join(bootDir, 'imgctl');
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.img');
  const config = join(dirname(grub.config), 'custom.cfg');
  const before = await readFile(config, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  const mode = before === undefined ? 0o644 : (await stat(config)).mode & 0o777;
  const kept = withoutEntry(before ?? '');
  const write = async (text: string) => {
    const temporary = `${config}.imgctl-${process.pid}`;
    try {
      await writeFile(temporary, text, { mode });
      await rename(temporary, config);
    } finally {
      await rm(temporary, { force: true });
    }
  };
  const undo = async () => {
    if (before === undefined) await rm(config, { force: true });
    else if (kept !== before) await write(kept);
    await rm(dir, { recursive: true, force: true });
    // best effort: the choice may not have been made
    await runner
      .run(`${grub.tools}-editenv`, [join(dirname(grub.config), 'grubenv'), 'unset', 'next_entry'])
      .catch(() => undefined);
  };
  try {
    await ensureDir(dir, 0o700);
    await copyFile(files.kernel, kernel);
    await copyFile(files.initrd, initrd);
    // the staged initrd holds the one-time token
    await chmod(initrd, 0o600);
    const probe = async (target: string) =>
      (
        await run(runner, `${grub.tools}-probe`, [`--target=${target}`, kernel], 'grub-probe')
      ).stdout.trim();
    const relpath = async (file: string) =>
      (await run(runner, `${grub.tools}-mkrelpath`, [file], 'grub-mkrelpath')).stdout.trim();
    const partmap = await probe('partmap');
    const text = renderEntry({
      insmods: [...(partmap ? [`part_${partmap}`] : []), await probe('fs')],
      fsUuid: await probe('fs_uuid'),
      kernel: await relpath(kernel),
      initrd: await relpath(initrd),
      cmdline: files.cmdline,
    });
    await write(`${kept}${kept === '' || kept.endsWith('\n') ? '' : '\n'}${text}`);
    await run(runner, `${grub.tools}-reboot`, [ENTRY_ID], 'grub-reboot');
  } catch (error) {
    await undo();
    throw error;
  }
  return { loader: 'grub', config, kernel, initrd, entry: ENTRY_ID, undo };
}
