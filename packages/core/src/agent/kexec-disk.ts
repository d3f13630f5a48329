/**
 * `imgagent --replace-self --kexec`: the kernel, initramfs and command line of the disk just
 * written, from its syslinux/extlinux configuration on a vfat partition (mtools: nothing is
 * mounted), loaded with `kexec -l` for the switch.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type StepDeps } from './steps.ts';
import { readPartitionTable } from './target-disk.ts';

interface KexecFiles {
  kernel: string;
  initrd?: string;
  cmdline: string;
}

/**
 * Finds the kernel and initramfs of the written disk from its syslinux/extlinux configuration
 * on a vfat partition (mtools; nothing is mounted) and loads them with `kexec -l`. Returns why
 * not when it cannot (no such configuration, kexec-tools missing).
 */
export async function prepareKexec(
  target: string,
  work: string,
  deps: Pick<StepDeps, 'runner' | 'scriptEnv'>,
): Promise<KexecFiles | { reason: string }> {
  const found = await findBootFiles(target, deps, work);
  if ('reason' in found) return found;
  try {
    await deps.runner.run('kexec', ['--version']);
  } catch {
    return {
      reason: `found ${found.kernel} on ${target}, but kexec is not installed (kexec-tools)`,
    };
  }
  await run(
    deps.runner,
    'kexec',
    [
      '-l',
      join(work, 'kexec-kernel'),
      ...(found.initrd ? [`--initrd=${join(work, 'kexec-initrd')}`] : []),
      `--append=${found.cmdline}`,
    ],
    'kexec -l',
  );
  return found;
}

/** The default entry of a syslinux/extlinux config on one of the target's vfat partitions. */
async function findBootFiles(
  target: string,
  deps: Pick<StepDeps, 'runner' | 'scriptEnv'>,
  work: string,
): Promise<KexecFiles | { reason: string }> {
  const table = await readPartitionTable(target, deps.runner);
  const env = {
    PATH: deps.scriptEnv.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    MTOOLS_SKIP_CHECK: '1',
  };
  for (const p of table?.partitions ?? []) {
    const image = `${target}@@${p.start}`;
    for (const config of [
      '/syslinux.cfg',
      '/extlinux.conf',
      '/boot/syslinux/syslinux.cfg',
      '/extlinux/extlinux.conf',
      '/syslinux/syslinux.cfg',
    ]) {
      let text: string;
      try {
        text = (await deps.runner.run('mtype', ['-i', image, `::${config}`], { env })).stdout;
      } catch {
        continue;
      }
      const entry = parseSyslinux(text);
      if (!entry) continue;
      const dir = config.slice(0, config.lastIndexOf('/') + 1);
      const abs = (f: string) => (f.startsWith('/') ? f : `${dir}${f}`);
      try {
        await deps.runner.run(
          'mcopy',
          ['-n', '-i', image, `::${abs(entry.kernel)}`, join(work, 'kexec-kernel')],
          { env },
        );
        if (entry.initrd)
          await deps.runner.run(
            'mcopy',
            ['-n', '-i', image, `::${abs(entry.initrd)}`, join(work, 'kexec-initrd')],
            { env },
          );
        await access(join(work, 'kexec-kernel'));
      } catch {
        return {
          reason: `${config} on partition ${p.number} names ${entry.kernel}, which cannot be read`,
        };
      }
      return {
        kernel: abs(entry.kernel),
        initrd: entry.initrd && abs(entry.initrd),
        cmdline: entry.cmdline,
      };
    }
  }
  return {
    reason: `no syslinux/extlinux configuration on a vfat partition of ${target} (other boot loaders are not read)`,
  };
}

/** KERNEL/LINUX, INITRD and APPEND of the DEFAULT label (or the first one). */
export function parseSyslinux(
  text: string,
): { kernel: string; initrd?: string; cmdline: string } | undefined {
  const labels: Array<{ name: string; kernel?: string; initrd?: string; append: string }> = [];
  let defaultName: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const m = /^(\S+)\s*(.*)$/.exec(line);
    if (!m || line.startsWith('#')) continue;
    const key = m[1]!.toUpperCase();
    const value = m[2]!.trim();
    const current = labels.at(-1);
    if (key === 'DEFAULT') defaultName = value.split(/\s+/)[0];
    else if (key === 'LABEL') labels.push({ name: value, append: '' });
    else if (current && (key === 'KERNEL' || key === 'LINUX')) current.kernel = value;
    else if (current && key === 'INITRD') current.initrd = value;
    else if (current && key === 'APPEND') {
      const initrd = /(?:^|\s)initrd=(\S+)/.exec(value)?.[1];
      if (initrd && !current.initrd) current.initrd = initrd;
      current.append = value.replace(/(?:^|\s)initrd=\S+/, '').trim();
    }
  }
  const chosen = labels.find((l) => l.name === defaultName) ?? labels[0];
  if (!chosen?.kernel) return undefined;
  return { kernel: chosen.kernel, initrd: chosen.initrd, cmdline: chosen.append };
}
