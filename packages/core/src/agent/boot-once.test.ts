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

  const runner = (failing = '') => ({
    async run(file: string, args: string[]) {
      calls.push([file, ...args]);
      if (file === failing) throw Object.assign(new Error(`${file} failed`), { stderr: 'no' });
      const target = args[0]?.replace('--target=', '');
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

  it('is only offered by a GRUB whose grub.cfg reads custom.cfg', async () => {
    expect(await findGrub(runner() as never, boot)).toBeUndefined();
    await writeFile(join(boot, 'grub/grub.cfg'), 'menuentry Debian {}\n');
    expect(await findGrub(runner() as never, boot)).toBeUndefined();
    await writeFile(join(boot, 'grub/grub.cfg'), 'source ${config_directory}/custom.cfg\n');
    expect(await findGrub(runner('grub-reboot') as never, boot)).toBeUndefined();
    expect(await findGrub(runner() as never, boot)).toEqual({
      tools: 'grub',
      config: join(boot, 'grub/grub.cfg'),
    });
  });

  it('adds its entry beside what custom.cfg holds, replaces its old one, and boots it once', async () => {
    const grub = { tools: 'grub' as const, config: join(boot, 'grub/grub.cfg') };
    const custom = join(boot, 'grub/custom.cfg');
    await writeFile(custom, 'menuentry mine {}\n', { mode: 0o640 });
    const first = await addBootOnceEntry(grub, files(), runner() as never, boot);
    const entry = await addBootOnceEntry(grub, files(), runner() as never, boot);
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

  it('undoes everything when grub-reboot fails', async () => {
    const grub = { tools: 'grub' as const, config: join(boot, 'grub/grub.cfg') };
    await expect(
      addBootOnceEntry(grub, files(), runner('grub-reboot') as never, boot),
    ).rejects.toMatchObject({
      code: 'FAILED',
      message: 'grub-reboot: no',
    });
    await expect(stat(join(boot, 'grub/custom.cfg'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(join(boot, 'imgctl'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
