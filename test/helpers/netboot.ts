/**
 * A network-boot LAN for e2e tests: a host bridge with an address of its own and a real dnsmasq
 * on it (DHCP only, no DNS) that tells iPXE clients — the ROM qemu runs for `<boot dev='network'/>`
 * (Debian's ipxe-qemu), recognised by DHCP option 175 — to chain to `bootUrl`; other DHCP
 * clients (the provisioning ramdisk's udhcpc) just get an address. And a domain for an empty
 * machine: a blank disk, network boot first, the serial console to a file.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { virsh } from './libvirt.ts';

export interface NetbootLan {
  bridge: string;
  /** the host's address on the bridge: where the VMs reach `imgctl serve` */
  hostIp: string;
  /** what dnsmasq logged (DHCP offers, the boot file it gave) */
  log(): string;
  stop(): Promise<void>;
}

/** A /24 of 10.77.x.0 of this process (tests in parallel get different ones). */
export function lanSubnet(): string {
  return `10.77.${process.pid % 250}`;
}

/**
 * Starts the bridge, then dnsmasq; `bootUrl(hostIp)` (called once the bridge has its address,
 * so a server can listen there first) is the URL iPXE is told to chain to.
 */
export async function startNetbootLan(
  name: string,
  bootUrl: (hostIp: string) => string | Promise<string>,
): Promise<NetbootLan> {
  const subnet = lanSubnet();
  const hostIp = `${subnet}.1`;
  const dir = await mkdtemp('/tmp/imgctl-lan-');
  await execa('ip', ['link', 'add', name, 'type', 'bridge']);
  await execa('ip', ['addr', 'add', `${hostIp}/24`, 'dev', name]);
  await execa('ip', ['link', 'set', name, 'up']);
  const url = await bootUrl(hostIp);
  const child = spawn(
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--log-facility=-',
      '--log-dhcp',
      '--conf-file=/dev/null',
      '--port=0',
      `--interface=${name}`,
      '--bind-interfaces',
      `--dhcp-range=${subnet}.50,${subnet}.150,255.255.255.0,1h`,
      `--dhcp-leasefile=${join(dir, 'leases')}`,
      `--pid-file=${join(dir, 'pid')}`,
      '--dhcp-match=set:ipxe,175',
      `--dhcp-boot=tag:ipxe,${url}`,
      `--dhcp-option=option:router,${hostIp}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr.on('data', (d: Buffer) => (log += d.toString()));
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit').catch(() => undefined);
    }
    await execa('ip', ['link', 'del', name], { reject: false });
    await rm(dir, { recursive: true, force: true });
  };
  // dnsmasq says "started" once it serves; a bad option makes it exit at once
  const deadline = Date.now() + 10_000;
  while (!/DHCP, IP range/.test(log)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`dnsmasq did not start:\n${log}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { bridge: name, hostIp, log: () => log, stop };
}

export interface EmptyMachine {
  name: string;
  disk: string;
  serialLog: string;
  mac: string;
  remove(): Promise<void>;
}

/**
 * Defines (not starts) a machine with a blank raw disk that boots from the network first, then
 * from its disk — as a bare server whose firmware tries PXE before the disk. With `disk`, the
 * machine has that raw disk instead, and boots only from it.
 */
export async function defineEmptyMachine(options: {
  name: string;
  dir: string;
  bridge: string;
  mac: string;
  diskBytes: number;
  memoryMiB?: number;
  /** an existing raw disk (the machine then boots from it only) */
  disk?: string;
}): Promise<EmptyMachine> {
  const disk = options.disk ?? join(options.dir, `${options.name}.raw`);
  const serialLog = join(options.dir, `${options.name}.serial.log`);
  if (options.disk === undefined) {
    await writeFile(disk, '');
    await truncate(disk, options.diskBytes);
  }
  const boot =
    options.disk === undefined ? "<boot dev='network'/><boot dev='hd'/>" : "<boot dev='hd'/>";
  const xml = `<domain type='qemu'>
  <name>${options.name}</name>
  <memory unit='MiB'>${options.memoryMiB ?? 512}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type>${boot}</os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='${disk}'/><target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='${options.mac}'/><source bridge='${options.bridge}'/><model type='virtio'/>
    </interface>
    <serial type='file'><source path='${serialLog}'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
`;
  const file = join(options.dir, `${options.name}.xml`);
  await writeFile(file, xml);
  const defined = await virsh(['define', file]);
  if (defined.exitCode !== 0) throw new Error(`virsh define ${options.name} failed`);
  return {
    name: options.name,
    disk,
    serialLog,
    mac: options.mac,
    async remove() {
      await virsh(['destroy', options.name]);
      await virsh(['undefine', options.name]);
    },
  };
}

/**
 * Waits for `pattern` on a machine's serial console (a file); returns the whole console. On a
 * timeout the error shows the console's end, and `context()` (a dnsmasq log, say).
 */
export async function serialShows(
  serialLog: string,
  pattern: RegExp,
  timeoutMs = 420_000,
  context: () => string = () => '',
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(serialLog, 'latin1').catch(() => '');
    if (pattern.test(text)) return text;
    if (Date.now() > deadline)
      throw new Error(
        `no ${pattern} on the serial console after ${timeoutMs} ms:\n${text.slice(-4000)}\n${context()}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
