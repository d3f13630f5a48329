import { describe, expect, it } from 'vitest';
import {
  canonicalMac,
  chainScript,
  isScriptCmdline,
  isScriptUrl,
  localBootScript,
  ramdiskScript,
} from './boot-script.ts';

const K = 'a'.repeat(64);
const I = 'b'.repeat(64);
const TOKEN = `imgctl-boot-${'c'.repeat(64)}`;

describe('iPXE boot scripts', () => {
  it('chain to the MAC of the interface iPXE booted from, and boot the local disk without a server', () => {
    expect(chainScript('http://10.0.0.1:8460')).toBe(
      [
        '#!ipxe',
        '# imgctl: ask for the script of the system with this interface MAC address',
        'chain http://10.0.0.1:8460/v1/boot/ipxe?mac=${netX/mac} || goto local',
        'exit',
        ':local',
        'sanboot --no-describe --drive 0x80 || exit',
        'exit',
        '',
      ].join('\n'),
    );
  });

  it('boot the local disk with a comment saying why', () => {
    expect(localBootScript('no system has this MAC address')).toBe(
      '#!ipxe\n# imgctl: local boot: no system has this MAC address\nsanboot --no-describe --drive 0x80 || exit\nexit\n',
    );
    expect(() => localBootScript('a\nchain http://evil/')).toThrow();
  });

  it("boot the ramdisk by its files' digests with its instructions on the kernel command line", () => {
    const script = ramdiskScript({
      baseUrl: 'https://boot.example.com:8443',
      system: 'web01',
      mac: '52:54:00:12:34:56',
      token: TOKEN,
      kernelSha256: K,
      initrdSha256: I,
      cmdline: 'console=ttyS0,115200 quiet',
      trustPem: 'PEM',
    });
    expect(script.split('\n')).toEqual([
      '#!ipxe',
      '# imgctl: provisioning ramdisk for system web01',
      `kernel https://boot.example.com:8443/v1/boot/kernel?sha256=${K} initrd=initrd console=ttyS0,115200 quiet BOOTIF=01-52-54-00-12-34-56 imgctl.server=https://boot.example.com:8443 imgctl.system=web01 imgctl.token=${TOKEN} imgctl.trust=UEVN`,
      `initrd --name initrd https://boot.example.com:8443/v1/boot/initrd?sha256=${I}`,
      'boot',
      '',
    ]);
    const plain = ramdiskScript({
      baseUrl: 'http://10.0.0.1:80',
      system: 'a',
      mac: '52:54:00:12:34:56',
      token: TOKEN,
      kernelSha256: K,
      initrdSha256: I,
      cmdline: '',
    });
    expect(plain).toContain(`initrd=initrd BOOTIF=01-52-54-00-12-34-56 imgctl.server=`);
    expect(plain).not.toContain('imgctl.trust');
  });

  it('refuse anything iPXE would expand, split or take for an operator', () => {
    for (const url of [
      'http://x/${net0/ip}',
      'http://x y',
      'http://x"',
      "http://x'",
      'http://x\\y',
      'http://x/',
      'ftp://x',
      'http://x\nkernel',
    ])
      expect(isScriptUrl(url), url).toBe(false);
    expect(isScriptUrl('http://[fd00::1]:8460')).toBe(true);
    for (const cmdline of ['a ${x}', 'a || shell', 'a  b', ' a', 'a "b c"', 'a\nb', 'a;b'])
      expect(isScriptCmdline(cmdline), cmdline).toBe(false);
    expect(isScriptCmdline('console=ttyS0,115200n8 panic=10 rd.x=/a:b')).toBe(true);
    const boot = {
      baseUrl: 'http://x:1',
      system: 'web01',
      mac: '52:54:00:12:34:56',
      token: TOKEN,
      kernelSha256: K,
      initrdSha256: I,
      cmdline: '',
    };
    expect(() => ramdiskScript({ ...boot, cmdline: 'a ${b}' })).toThrow();
    expect(() => ramdiskScript({ ...boot, system: 'Web01 x' })).toThrow();
    expect(() => ramdiskScript({ ...boot, baseUrl: 'http://x/$y' })).toThrow();
  });

  it('take MAC addresses in either case, colons only', () => {
    expect(canonicalMac('52:54:00:AB:cd:EF')).toBe('52:54:00:ab:cd:ef');
    for (const bad of [
      '52-54-00-ab-cd-ef',
      '525400abcdef',
      '52:54:00:ab:cd',
      '52:54:00:ab:cd:ef\n',
      '${x}',
    ])
      expect(canonicalMac(bad), bad).toBeUndefined();
  });
});
