/**
 * Reinstalling a running machine, all real: a libvirt VM runs the Debian 12 test image (built by
 * `imgctl build debian-12`, cached as test/debian-cloud-init does) on a test LAN (a bridge and a
 * real dnsmasq: test/helpers/netboot.ts) where `imgctl serve` listens. Its system is switched to
 * the tiny appliance, and `imgctl provision root@VM --replace-self --via-ramdisk --target-disk
 * /dev/vda --reboot` copies the self-contained agent into the guest over SSH and runs it there
 * against the disk the guest runs from: it checks the plan, pulls the provisioning ramdisk (built
 * by `imgctl ramdisk build`, cached), stages a one-time token into it and switches with kexec.
 * The ramdisk takes an address by DHCP, writes /dev/vda and reboots; the VM comes back as the
 * tiny appliance with the system's hostname.
 *
 * Slow: ~1 min for Debian to boot under software emulation, ~1 min for the switch and the write.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type AgentRig, runAgent, startAgentRig } from './helpers/agent-rig.ts';
import { execImgctl, MiB } from './helpers/index.ts';
import { startLibvirt, virsh } from './helpers/libvirt.ts';
import {
  defineEmptyMachine,
  type EmptyMachine,
  lanSubnet,
  type NetbootLan,
  serialShows,
  startNetbootLan,
} from './helpers/netboot.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { makeSshKey } from './helpers/sshd.ts';

const CACHE = process.env.IMGCTL_TEST_CACHE ?? '/var/cache/imgctl-test';
const BRIDGE = `imgrr${process.pid % 100000}`;
const VM = 'rrdebian';
const SYSTEM = 'rrhost';
const MAC = '52:54:00:77:02:01';

describe('slow: a running Debian machine reinstalled through the provisioning ramdisk', () => {
  let rig: AgentRig;
  let lan: NetbootLan | undefined;
  let server: TestServer | undefined;
  let machine: EmptyMachine | undefined;
  let dir: string;
  let key: string;
  const ip = `${lanSubnet()}.20`;
  const imgctl = (args: string[], env: Record<string, string> = {}) =>
    execImgctl(['--store', rig.store.dir, ...args], { env, timeoutMs: 900_000 });

  const serialConsole = () => readFile(machine!.serialLog, 'latin1').catch(() => '');

  beforeAll(async () => {
    await startLibvirt();
    await virsh(['destroy', VM]);
    await virsh(['undefine', VM]);
    rig = await startAgentRig('imgctl-replace-running-');
    for (const args of [
      ['build', 'debian-12'],
      ['ramdisk', 'build'],
    ]) {
      const built = await imgctl(args, {
        IMGCTL_BUILD_CACHE: CACHE,
        IMGCTL_AGENT_EXECUTABLE: join(inject('distDir'), 'imgagent-linux-x64'),
      });
      if (built.exitCode !== 0)
        throw new Error(`imgctl ${args.join(' ')} failed:\n${built.stderr}`);
    }
    dir = await mkdtemp('/tmp/imgctl-rrvm-');
    await execa('chmod', ['755', dir]);
    key = await makeSshKey(join(dir, 'id_ed25519'));
    lan = await startNetbootLan(BRIDGE, async (hostIp) => {
      server = await startServer({
        storeDir: rig.store.dir,
        args: ['--listen', `${hostIp}:0`, '--write-token-file', rig.tokenFile],
      });
      return `${server.url}/v1/boot/ipxe`;
    });
    await writeFile(
      join(rig.store.dir, `systems/${SYSTEM}.yaml`),
      [
        'apiVersion: imgctl/v1',
        'kind: System',
        `name: ${SYSTEM}`,
        `hostname: ${SYSTEM}`,
        'image: debian-12',
        'target_disk: /dev/vda',
        'interfaces:',
        '  - name: eth0',
        `    mac: "${MAC}"`,
        `    ip: ${ip}/24`,
        `    gateway: ${lan.hostIp}`,
        `    dns: [${lan.hostIp}]`,
        'ssh_authorized_keys:',
        `  - ${(await readFile(`${key}.pub`, 'utf8')).trim()}`,
        '',
      ].join('\n'),
    );
    // The machine as it runs today: Debian written over its disk by the agent, from this host.
    const disk = join(dir, `${VM}.raw`);
    await execa('truncate', ['-s', String(2048 * MiB + 16 * MiB), disk]);
    const written = await runAgent([
      ...['--server', server!.url, '--token-file', rig.tokenFile],
      ...['--cache-dir', rig.paths.cache, '--log-dir', rig.paths.logs],
      ...['--replace-self', '--system', SYSTEM, '--target-disk', disk],
    ]);
    if (written.exitCode !== 0) throw new Error(`writing Debian failed:\n${written.stderr}`);
    machine = await defineEmptyMachine({
      name: VM,
      dir,
      bridge: BRIDGE,
      mac: MAC,
      diskBytes: 0,
      disk,
      memoryMiB: 1024,
    });
  }, 1_500_000);

  afterAll(async () => {
    await machine?.remove();
    await server?.stop();
    await lan?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
    await rig?.stop();
  });

  /** root over SSH with the system's key */
  async function ssh(command: string) {
    return execa(
      'ssh',
      [
        ...['-i', key, '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5'],
        ...['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'],
        `root@${ip}`,
        command,
      ],
      { reject: false, timeout: 60_000 },
    );
  }

  it('imgagent --replace-self --via-ramdisk on its own root disk: it comes back as the appliance', async () => {
    expect((await virsh(['start', VM])).exitCode).toBe(0);
    const deadline = Date.now() + 480_000;
    while ((await ssh('cloud-init status --wait >/dev/null; hostname')).stdout.trim() !== SYSTEM) {
      if (Date.now() > deadline)
        throw new Error(`no SSH login as root to ${ip}:\n${(await serialConsole()).slice(-4000)}`);
      await sleep(3000);
    }
    // what it runs from: its root filesystem is on /dev/vda
    expect((await ssh('findmnt -no SOURCE /')).stdout).toMatch(/^\/dev\/vda/);

    // the system is to be the tiny appliance now; without --via-ramdisk the agent refuses
    expect((await imgctl(['system', 'set', SYSTEM, 'image=tiny-linux'])).exitCode).toBe(0);
    const knownHosts = join(dir, 'known_hosts');
    const provision = (extra: string[]) =>
      imgctl(
        [
          ...['provision', `root@${ip}`, '--replace-self', '--system', SYSTEM],
          ...['--target-disk', '/dev/vda', '--server', server!.url, '--token-file', rig.tokenFile],
          ...['--identity', key, '--known-hosts', knownHosts, '--accept-new', '--json', ...extra],
        ],
        { IMGCTL_AGENT_BUNDLE: join(inject('distDir'), 'imgagent.mjs') },
      );
    const refused = await provision(['--reboot']);
    expect(refused.exitCode, refused.stderr).not.toBe(0);
    expect(refused.stdout).toContain('target disk /dev/vda is in use by this machine');

    const run = await provision(['--via-ramdisk', '--reboot']);
    expect(run.exitCode, `${run.stderr}\n${run.stdout}`).toBe(0);
    const summary = JSON.parse(run.stdout) as {
      targets: Array<{
        status: string;
        agent: string;
        result: { ramdisk: { via: string; switched: boolean } };
      }>;
    };
    expect(summary.targets[0]).toMatchObject({
      status: 'ok',
      agent: 'executable',
      result: { ramdisk: { via: 'kexec', switched: true } },
    });

    const console = await serialShows(
      machine!.serialLog,
      new RegExp(`IMGCTL-APPLIANCE hostname=${SYSTEM} `),
    );
    // Debian ran, its kernel started the ramdisk's (kexec: no firmware in between), which wrote
    // the disk before the appliance came up from it
    const at = [
      'Debian GNU/Linux 12',
      'kexec_core: Starting new kernel',
      'IMGCTL-RAMDISK',
      'IMGCTL-APPLIANCE',
    ].map((text) => console.indexOf(text));
    expect(at[0], 'Debian booted').toBeGreaterThanOrEqual(0);
    expect(at).toEqual([...at].sort((a, b) => a - b));
    const status = JSON.parse(
      (await imgctl(['status', '--system', SYSTEM, '--json'])).stdout,
    ) as Array<{ state: string; image: string; runs: number; phases: Array<{ phase: string }> }>;
    // the ramdisk's run, the second of the system (the first wrote Debian)
    expect(status[0]).toMatchObject({ state: 'done', image: 'tiny-linux', runs: 2 });
    // the one-time token was staged into the initrd, never shown
    expect(console).not.toContain('imgctl-boot-');
    expect(status[0]!.phases.map((p) => p.phase)).toEqual(
      expect.arrayContaining(['started', 'disks-ready', 'configured', 'done']),
    );
  });
});
