import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { PlanDoc } from '../store/types.ts';
import { checkViaRamdisk, ramdiskDryRun, switchViaRamdisk } from './via-ramdisk.ts';

const KERNEL = 'a'.repeat(64);
const INITRD = 'b'.repeat(64);
const TOKEN = `imgctl-boot-${'c'.repeat(64)}`;
const PLAN = {
  image: { name: 'tiny-linux', revision: 3, release: 'tiny-linux@3' },
  record: 'default',
  system: 'web07',
} as unknown as PlanDoc;

describe('switchViaRamdisk', () => {
  let dir: string;
  let calls: string[][];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'via-'));
    calls = [];
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  /** kexec: present, missing, or present but refusing to load (lockdown) */
  let diskId = '0x2b3c4d5e\n';
  let stagedText = '';
  const deps = (kexec: 'yes' | 'no' | 'refuses' = 'yes') => ({
    runner: {
      async run(file: string, args: string[]) {
        calls.push([file, ...args]);
        if (file === 'kexec' && (kexec === 'no' || (kexec === 'refuses' && args[0] === '-l')))
          throw Object.assign(new Error('kexec failed'), { stderr: 'Operation not permitted' });
        if (file === 'sfdisk') return { stdout: diskId };
        if (file === 'kexec' && args[0] === '-l')
          stagedText = await readFile(args[2]!.slice('--initrd='.length), 'latin1');
        if (file === 'grub-probe') return { stdout: args[0] === '--target=fs' ? 'ext2' : '' };
        if (file === 'grub-mkrelpath') return { stdout: args[0]!.slice(dir.length) };
        return { stdout: '' };
      },
    },
    client: {
      baseUrl: 'http://imgsrv:8460',
      getRamdisk: async () => ({
        kernel: { sha256: KERNEL, size: 6 },
        initrd: { sha256: INITRD, size: 6 },
        cmdline: 'console=ttyS0',
      }),
      issueBootToken: async (system: string) => {
        calls.push(['token', system]);
        return { token: TOKEN, expires: '' };
      },
      downloadBlob: async (hex: string, dest: string) => {
        await writeFile(dest, hex === INITRD ? 'INITRD' : 'KERNEL');
        return { path: dest, size: 6, sha256: hex, resumedBytes: 0, requests: 1 };
      },
    },
    now: () => 0,
    log: () => undefined,
    scriptEnv: {},
  });
  const options = {
    cacheDir: '',
    targetDisk: '/dev/disk/by-id/virtio-root',
    target: { realPath: '/dev/vda', size: 2_000_000_000 },
    switchNow: true,
    bootDir: '/nonexistent',
  };

  it('stages the instructions (token included) into the initrd, never on the command line', async () => {
    const done = await switchViaRamdisk(PLAN, { ...options, cacheDir: dir }, deps() as never);
    expect(done.switched).toBe(true);
    expect(calls).toContainEqual(['token', 'web07']);
    const load = calls.find((c) => c[0] === 'kexec' && c[1] === '-l')!;
    expect(load).toEqual([
      'kexec',
      '-l',
      done.kernel,
      `--initrd=${done.staged}`,
      '--command-line=console=ttyS0 imgctl.instructions=/imgctl/instructions',
    ]);
    expect(calls.slice(-2)).toEqual([['sync'], ['systemctl', 'kexec']]);
    const staged = stagedText;
    // loaded: the copy with the token is gone
    await expect(readFile(done.staged)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(staged.startsWith('INITRD')).toBe(true);
    expect(staged).toContain(`token=${TOKEN}\n`);
    // the ramdisk finds the disk by its identifier and size, whatever its kernel names it
    expect(staged).toContain('target_disk=/dev/disk/by-id/virtio-root\n');
    expect(staged).toContain('target_disk_id=0x2b3c4d5e\ntarget_size=2000000000\nforce=1\n');
    expect(calls).toContainEqual(['sfdisk', '--disk-id', '/dev/vda']);
    expect(staged).toContain('image=tiny-linux@3\n');
    expect(calls.flat().join(' ')).not.toContain(TOKEN);
  });

  it('without --reboot loads only; without kexec or a system it changes nothing', async () => {
    const loaded = await switchViaRamdisk(
      PLAN,
      { ...options, cacheDir: dir, switchNow: false },
      deps() as never,
    );
    expect(loaded.switched).toBe(false);
    expect(calls.some((c) => c[1] === '-e')).toBe(false);
    calls = [];
    await expect(
      switchViaRamdisk(PLAN, { ...options, cacheDir: dir }, deps('no') as never),
    ).rejects.toMatchObject({
      code: 'HOST',
      message: expect.stringContaining('kexec is missing') as unknown,
    });
    expect(calls.some((c) => c[0] === 'token')).toBe(false);
    await expect(
      switchViaRamdisk(
        { ...PLAN, system: undefined },
        { ...options, cacheDir: dir },
        deps() as never,
      ),
    ).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('without kexec, or when the kernel refuses it, boots the ramdisk once through GRUB', async () => {
    await mkdir(join(dir, 'boot/grub'), { recursive: true });
    await writeFile(join(dir, 'boot/grub/grub.cfg'), 'source $prefix/custom.cfg\n');
    for (const kexec of ['no', 'refuses'] as const) {
      calls = [];
      const done = await switchViaRamdisk(
        PLAN,
        { ...options, cacheDir: dir, bootDir: join(dir, 'boot') },
        deps(kexec) as never,
      );
      expect(done).toMatchObject({ via: 'boot-entry', switched: true });
      expect(calls.slice(-2)).toEqual([
        ['grub-reboot', 'imgctl-ramdisk'],
        ['systemctl', 'reboot'],
      ]);
      const custom = await readFile(join(dir, 'boot/grub/custom.cfg'), 'utf8');
      expect(custom).toContain(
        "linux '/boot/imgctl/vmlinuz' 'console=ttyS0' 'imgctl.instructions=/imgctl/instructions'",
      );
      expect(await readFile(join(dir, 'boot/imgctl/initrd.img'), 'latin1')).toContain(
        `token=${TOKEN}`,
      );
    }
  });

  it('a dry run says how it would switch, or why it could not', async () => {
    const kexec = await ramdiskDryRun(PLAN, deps('yes').runner as never, join(dir, 'none'));
    expect(kexec).toEqual({ message: expect.stringContaining('with kexec') as unknown });
    const neither = await ramdiskDryRun(PLAN, deps('no').runner as never, join(dir, 'none'));
    const systemless = await ramdiskDryRun({}, deps('yes').runner as never, join(dir, 'none'));
    expect(systemless.refused).toMatchObject({ code: 'USAGE' });
    expect(neither.refused).toMatchObject({ code: 'HOST' });
    expect(calls.some((c) => c[0] === 'token')).toBe(false);
  });

  it('refuses a disk it could not find again, and what the ramdisk would not get', async () => {
    diskId = '';
    await expect(
      switchViaRamdisk(PLAN, { ...options, cacheDir: dir }, deps() as never),
    ).rejects.toMatchObject({
      code: 'HOST',
      message: expect.stringContaining('no partition table') as unknown,
    });
    expect(calls.some((c) => c[0] === 'token')).toBe(false);
    diskId = '0x2b3c4d5e';
    const disk = { kind: 'block' as const, path: '/dev/sda' };
    expect(() => checkViaRamdisk({ boot: 'reboot' }, disk)).not.toThrow();
    const refusals: Array<[Parameters<typeof checkViaRamdisk>[0], string]> = [
      [{ boot: 'reboot', sets: ['a=1'] }, '--set'],
      [{ boot: 'none', update: true }, '--update'],
      [{ boot: 'none', dataDisks: { data: '/dev/sdb' } }, '--data-disk'],
      [{ boot: 'kexec' }, 'switches with kexec itself'],
    ];
    for (const [options, what] of refusals)
      expect(() => checkViaRamdisk(options, disk)).toThrow(what);
    expect(() => checkViaRamdisk({ boot: 'none' }, { kind: 'file', path: '/x.raw' })).toThrow(
      'is a file',
    );
  });
});
