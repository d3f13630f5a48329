import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { addBootOnceEntry, findGrub, withoutEntry } from './boot-once.ts';

describe('the one-time GRUB boot entry', () => {
  let dir: string;
  let boot: string;
  let calls: string[][];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boot-once-'));
    boot = join(dir, 'boot');
    await mkdir(join(boot, 'grub'), { recursive: true });
    await writeFile(join(dir, 'vmlinuz'), 'KERNEL');
    await writeFile(join(dir, 'initrd'), 'INITRD token=secret');
    calls = [];
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  /** grub tools: `failing` throws; `under` is what grub-probe says /boot/grub is on */
  const runner = (failing = '', under = { abstraction: '', fs: 'ext2' }) => ({
    async run(file: string, args: string[]) {
      calls.push([file, ...args]);
      if (file === failing) throw Object.assign(new Error(`${file} failed`), { stderr: 'no' });
      const target = args[0]?.replace('--target=', '');
      if (file === 'grub-probe' && args[1] === join(boot, 'grub'))
        return { stdout: `${under[target as 'fs' | 'abstraction']}\n` };
      if (file === 'grub-probe')
        return { stdout: { partmap: 'msdos\n', fs: 'ext2\n', fs_uuid: '1234-abcd\n' }[target!]! };
      if (file === 'grub-mkrelpath') return { stdout: `/boot${args[0]!.slice(boot.length)}\n` };
      return { stdout: '' };
    },
  });
  const files = () => ({
    kernel: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initrd'),
    cmdline: 'console=ttyS0,115200n8 quiet imgctl.instructions=/imgctl/instructions',
  });

  it('is only offered by a GRUB that reads custom.cfg and can clear a one-time choice', async () => {
    const reason = async (r = runner()) =>
      ((await findGrub(r as never, boot)) as { reason?: string }).reason;
    expect(await reason()).toMatch(/no GRUB configuration/);
    await writeFile(join(boot, 'grub/grub.cfg'), 'menuentry Debian {}\n');
    expect(await reason()).toMatch(/does not read custom.cfg/);
    await writeFile(join(boot, 'grub/grub.cfg'), 'source ${config_directory}/custom.cfg\n');
    expect(await reason(runner('grub-reboot'))).toMatch(/grub-reboot or grub-probe failed/);
    expect(await reason(runner('', { abstraction: 'diskfilter lvm', fs: 'ext2' }))).toMatch(
      /is on diskfilter lvm, where GRUB cannot clear/,
    );
    expect(await reason(runner('', { abstraction: '', fs: 'btrfs' }))).toMatch(/is on btrfs/);
    // an EFI partition with a grub.cfg of its own (not Debian's configfile stub)
    await mkdir(join(boot, 'efi/EFI/redhat'), { recursive: true });
    await writeFile(join(boot, 'efi/EFI/redhat/grub.cfg'), "menuentry 'RHEL' {}\n");
    expect(await reason()).toMatch(/GRUB reads .*efi\/EFI\/redhat\/grub.cfg/);
    await writeFile(join(boot, 'efi/EFI/redhat/grub.cfg'), 'configfile $prefix/grub.cfg\n');
    expect(await findGrub(runner() as never, boot)).toEqual({
      tools: 'grub',
      config: join(boot, 'grub/grub.cfg'),
    });
  });

  it('adds its entry beside what custom.cfg holds, replaces its old one, and boots it once', async () => {
    const grub = { tools: 'grub' as const, config: join(boot, 'grub/grub.cfg') };
    const custom = join(boot, 'grub/custom.cfg');
    await writeFile(custom, 'menuentry mine {}\n', { mode: 0o640 });
    const { undo: _, ...first } = await addBootOnceEntry(grub, files(), runner() as never, boot);
    const { undo: __, ...entry } = await addBootOnceEntry(grub, files(), runner() as never, boot);
    expect(entry).toEqual(first);
    const text = await readFile(custom, 'utf8');
    expect(text.match(/menuentry 'imgctl provisioning ramdisk'/g)).toHaveLength(1);
    expect(text.startsWith('menuentry mine {}\n### imgctl ramdisk: begin')).toBe(true);
    expect(text).toContain("\tinsmod 'part_msdos'\n\tinsmod 'ext2'\n");
    expect(text).toContain("\tsearch --no-floppy --fs-uuid --set=root '1234-abcd'\n");
    expect(text).toContain(
      "\tlinux '/boot/imgctl/vmlinuz' 'console=ttyS0,115200n8' 'quiet' 'imgctl.instructions=/imgctl/instructions'\n",
    );
    expect(text).toContain("\tinitrd '/boot/imgctl/initrd.img'\n");
    expect(withoutEntry(text)).toBe('menuentry mine {}\n');
    expect((await stat(custom)).mode & 0o777).toBe(0o640);
    expect((await stat(entry.initrd)).mode & 0o777).toBe(0o600);
    expect(await readFile(entry.initrd, 'utf8')).toBe('INITRD token=secret');
    expect(calls.at(-1)).toEqual(['grub-reboot', 'imgctl-ramdisk']);
  });

  it('undoes everything when grub-reboot fails, or later when asked', async () => {
    const grub = { tools: 'grub' as const, config: join(boot, 'grub/grub.cfg') };
    await expect(
      addBootOnceEntry(grub, files(), runner('grub-reboot') as never, boot),
    ).rejects.toMatchObject({ code: 'FAILED', message: 'grub-reboot: no' });
    await expect(stat(join(boot, 'grub/custom.cfg'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(join(boot, 'imgctl'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(calls.at(-1)).toEqual([
      'grub-editenv',
      join(boot, 'grub/grubenv'),
      'unset',
      'next_entry',
    ]);

    // an old entry of ours is taken out with the new one; the user's own entries stay
    const custom = join(boot, 'grub/custom.cfg');
    await writeFile(custom, 'menuentry mine {}\n');
    await addBootOnceEntry(grub, files(), runner() as never, boot);
    const { undo } = await addBootOnceEntry(grub, files(), runner() as never, boot);
    await undo();
    expect(await readFile(custom, 'utf8')).toBe('menuentry mine {}\n');
    await expect(stat(join(boot, 'imgctl'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
