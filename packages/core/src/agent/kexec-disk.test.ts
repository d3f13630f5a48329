import { describe, expect, it } from 'vitest';
import { parseSyslinux } from './kexec-disk.ts';

describe('parseSyslinux (the kernel --kexec boots)', () => {
  it('takes the DEFAULT label: its kernel, initrd and command line', () => {
    const cfg = [
      'SERIAL 0 115200',
      'DEFAULT tiny',
      'LABEL rescue',
      '  KERNEL /rescue',
      'LABEL tiny',
      '  KERNEL /vmlinuz',
      '  INITRD /initrd.gz',
      '  APPEND console=ttyS0,115200 quiet',
    ].join('\n');
    expect(parseSyslinux(cfg)).toEqual({
      kernel: '/vmlinuz',
      initrd: '/initrd.gz',
      cmdline: 'console=ttyS0,115200 quiet',
    });
  });

  it('reads initrd= from APPEND, falls back to the first label, and gives up without a kernel', () => {
    expect(
      parseSyslinux('label a\n linux vmlinuz-6\n append initrd=initrd.img root=/dev/sda1\n'),
    ).toEqual({
      kernel: 'vmlinuz-6',
      initrd: 'initrd.img',
      cmdline: 'root=/dev/sda1',
    });
    expect(parseSyslinux('DEFAULT menu.c32\nPROMPT 0\n')).toBeUndefined();
  });
});
