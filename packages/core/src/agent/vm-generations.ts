/**
 * The files of a VM's generations (docs/agent.md, "Updating a VM"): each generation's definition
 * VM.gN.xml at the VM's path, what the domain defined now says (its metadata), which files of
 * other generations are left to remove, and the per-VM lock. vm-update.ts switches between them.
 */
import { copyFile, link, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { isAlive } from '../util/pid.ts';
import { ensureDir } from '../store/store.ts';
import { writeFileAtomic } from '../yaml/document.ts';
import {
  type DomainInfo,
  parseDomainXml,
  renderVmMeta,
  VM_META_NS,
  type VmMeta,
} from './domain-xml.ts';
import { run } from './steps.ts';
import type { VirtDeps } from './virt.ts';

export type Virsh = (args: string[]) => Promise<{ stdout: string }>;

/** The generation `meta` replaced, with its definition file; NOT_FOUND when none is kept. */
export async function keptGeneration(
  vm: string,
  meta: VmMeta,
): Promise<{ meta: VmMeta; file: string }> {
  const previous = meta.previous;
  const file = previous === undefined ? undefined : definitionFile(meta.virtPath, vm, previous);
  const xml = file && (await readFile(file, 'utf8').catch(() => undefined));
  const info = xml ? parseDomainXml(xml, file!) : undefined;
  if (!file || !info?.meta || info.meta.generation !== previous) {
    throw new ImgctlError(
      'NOT_FOUND',
      `${vm} has no previous generation to go back to (it is on generation ${meta.generation})`,
      { hint: 'only the generation an update replaced is kept, until the next update' },
    );
  }
  return { meta: info.meta, file };
}

/** The domain as defined, with imgagent's metadata; NOT_FOUND / CONFLICT when it has none. */
export async function readVm(
  vm: string,
  virsh: Virsh,
): Promise<DomainInfo & { meta: VmMeta; xml: string }> {
  let xml: string;
  try {
    xml = (await virsh(['dumpxml', '--inactive', '--security-info', vm])).stdout;
  } catch (error) {
    const said = String((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
    if (/failed to get domain|Domain not found/i.test(said))
      throw new ImgctlError('NOT_FOUND', `no VM '${vm}' on this host`, {
        hint: 'make it with imgagent --virt first',
      });
    throw new ImgctlError('FAILED', `virsh dumpxml ${vm}: ${said.split('\n').pop() ?? ''}`, {
      hint: 'is libvirtd running, and is --connect the URI the VM is defined at?',
    });
  }
  const info = parseDomainXml(xml, `domain ${vm}`);
  if (!info.meta)
    throw new ImgctlError(
      'CONFLICT',
      `VM '${vm}' was not made by imgagent --virt (no imgctl metadata)`,
      {
        hint: 'a VM made by an imgagent before 0.2 has none: update it by other means (imgagent --virt --force makes it again, data disks included, from the image)',
      },
    );
  return { ...info, meta: info.meta, xml };
}

/** Replaces imgagent's metadata in the domain's persistent definition (its health, what it follows). */
export async function setMeta(vm: string, meta: VmMeta, connect: string, deps: VirtDeps) {
  await run(
    deps.runner,
    'virsh',
    [
      ...['--connect', connect, 'metadata', vm, '--uri', VM_META_NS],
      ...['--key', 'imgctl', '--set', renderVmMeta(meta, true), '--config'],
    ],
    'virsh metadata',
  );
}

/**
 * Removes what generations other than `keep` left at the VM's path: their system and scratch
 * disks, seed and definition (data disks never). Each generation's files are read from its own
 * definition file, never guessed from names.
 */
export async function pruneGenerations(
  vm: string,
  meta: VmMeta,
  keep: Array<number | undefined>,
  deps: Pick<VirtDeps, 'log'>,
): Promise<void> {
  const dir = meta.virtPath;
  const kept = new Set<string>([meta.seed, ...meta.disks.map((d) => d.path)]);
  const others: Array<{ file: string; meta?: VmMeta }> = [];
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const generation = generationOf(vm, name);
    if (generation === undefined) continue;
    const file = join(dir, name);
    const xml = await readFile(file, 'utf8').catch(() => '');
    let info: VmMeta | undefined;
    try {
      info = parseDomainXml(xml, file).meta;
    } catch {
      info = undefined;
    }
    if (keep.includes(generation)) {
      for (const path of info ? [info.seed, ...info.disks.map((d) => d.path)] : []) kept.add(path);
    } else others.push({ file, meta: info });
  }
  for (const other of others) {
    for (const disk of [{ path: other.meta?.seed, use: 'seed' }, ...(other.meta?.disks ?? [])]) {
      const path = disk.path;
      if (path === undefined || dirname(path) !== dir) continue;
      // a disk a killed run left under its temporary name (data disks too: never the data)
      for (const name of names)
        if (name.startsWith(`${basename(path)}.tmp-`)) await rm(join(dir, name), { force: true });
      if (disk.use === 'data' || kept.has(path)) continue;
      await rm(path, { force: true });
    }
    await rm(other.file, { force: true });
    deps.log(
      `removed generation ${other.meta?.generation ?? '?'} of ${vm} (${basename(other.file)})`,
    );
  }
}

/** N for VM.gN.xml, the definition file of generation N of `vm`; undefined for other names. */
function generationOf(vm: string, name: string): number | undefined {
  const prefix = `${vm}.g`;
  if (!name.startsWith(prefix) || !name.endsWith('.xml')) return undefined;
  const digits = name.slice(prefix.length, -'.xml'.length);
  return /^[1-9][0-9]{0,8}$/.test(digits) ? Number(digits) : undefined;
}

export function definitionFile(virtPath: string, vm: string, generation: number): string {
  return join(virtPath, `${vm}.g${generation}.xml`);
}

export async function writeDurably(file: string, text: string): Promise<void> {
  await ensureDir(dirname(file), 0o755);
  // 0600: a definition dumped with --security-info may hold a graphics password
  await writeFileAtomic(file, text, 0o600);
}

/** A copy of the serial console of a failed boot, before the rollback's boot truncates it. */
export async function keepSerialLog(
  vm: string,
  meta: VmMeta,
  logDir: string,
): Promise<string | undefined> {
  const dest = join(logDir, meta.image, `${vm}.g${meta.generation}.failed.serial.log`);
  try {
    await ensureDir(dirname(dest), 0o755);
    await copyFile(meta.serialLog, dest);
    return dest;
  } catch {
    return undefined;
  }
}

/**
 * One update or rollback of a VM at a time: VM.lock at its path holds the pid of the agent
 * working on it; a lock whose process is gone (killed) is taken over.
 */
export async function lockVm(virtPath: string, vm: string): Promise<() => Promise<void>> {
  const file = join(virtPath, `${vm}.lock`);
  await ensureDir(virtPath, 0o755);
  // the pid is in the file before the file has the lock's name: nobody reads an empty lock
  const mine = `${file}.${process.pid}`;
  await writeFile(mine, `${process.pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(mine, file);
        return () => rm(file, { force: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 2) throw error;
        const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
        if (isAlive(pid))
          throw new ImgctlError('CONFLICT', `agent ${pid} is updating ${vm} now`, {
            hint: `nothing was changed; wait for it (or remove ${file} if no agent runs)`,
          });
        // its agent is gone (killed): the lock is taken over
        await rm(file, { force: true });
      }
    }
  } finally {
    await rm(mine, { force: true });
  }
}
