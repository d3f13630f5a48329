/**
 * Network boot end to end, all real: an empty machine (a libvirt domain with a blank disk that
 * boots from the network first, through qemu's iPXE ROM) on a test bridge where a real dnsmasq
 * points iPXE at a real `imgctl serve`; the server answers the provisioning ramdisk (built by
 * `imgctl ramdisk build`, cached as test/ramdisk does) with a one-time token for the machine's
 * system, the ramdisk writes the tiny appliance over the blank disk and reboots, iPXE asks again
 * and — netboot cleared by the `done` event — is told to boot the local disk, which comes up as
 * the appliance with the system's hostname. A second network boot boots the disk again.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest';
import { type AgentRig, startAgentRig } from './helpers/agent-rig.ts';
import { execImgctl, MiB } from './helpers/index.ts';
import { startLibvirt, virsh } from './helpers/libvirt.ts';
import {
  defineEmptyMachine,
  type EmptyMachine,
  type NetbootLan,
  serialShows,
  startNetbootLan,
} from './helpers/netboot.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const CACHE = process.env.IMGCTL_TEST_CACHE ?? '/var/cache/imgctl-test';
const BRIDGE = `imgnb${process.pid % 100000}`;
const VM = 'nbempty';
const MAC = '52:54:00:77:01:01';
/** a machine no system names */
const STRANGER = 'nbstranger';
const STRANGER_MAC = '52:54:00:77:01:99';

describe('slow: an empty machine network-boots and comes up provisioned', () => {
  let rig: AgentRig;
  let lan: NetbootLan | undefined;
  let server: TestServer | undefined;
  let machine: EmptyMachine | undefined;
  let dir: string;
  const imgctl = (args: string[], env: Record<string, string> = {}) =>
    execImgctl(['--store', rig.store.dir, ...args], { env, timeoutMs: 600_000 });

  const consoleShows = (pattern: RegExp, timeoutMs?: number) =>
    serialShows(machine!.serialLog, pattern, timeoutMs, () => lan?.log().slice(-2000) ?? '');

  beforeAll(async () => {
    await startLibvirt();
    for (const vm of [VM, STRANGER]) {
      await virsh(['destroy', vm]);
      await virsh(['undefine', vm]);
    }
    rig = await startAgentRig('imgctl-netboot-');
    const built = await imgctl(['ramdisk', 'build'], {
      IMGCTL_BUILD_CACHE: CACHE,
      IMGCTL_AGENT_EXECUTABLE: join(inject('distDir'), 'imgagent-linux-x64'),
    });
    if (built.exitCode !== 0) throw new Error(`imgctl ramdisk build failed:\n${built.stderr}`);
    await writeFile(
      join(rig.store.dir, 'systems/nbsys.yaml'),
      [
        'apiVersion: imgctl/v1',
        'kind: System',
        'name: nbsys',
        'hostname: nbhost',
        'image: tiny-linux',
        'target_disk: /dev/vda',
        'interfaces:',
        '  - name: eth0',
        `    mac: "${MAC}"`,
        '    dhcp: true',
        '',
      ].join('\n'),
    );
    const set = await imgctl(['system', 'set', 'nbsys', 'netboot=true']);
    if (set.exitCode !== 0) throw new Error(set.stderr);
    // the server listens on the bridge's address, where the machine reaches it
    lan = await startNetbootLan(BRIDGE, async (hostIp) => {
      server = await startServer({
        storeDir: rig.store.dir,
        args: ['--listen', `${hostIp}:0`, '--write-token-file', rig.tokenFile],
      });
      return `${server.url}/v1/boot/ipxe`;
    });
    dir = await mkdtemp('/tmp/imgctl-nbvm-');
    await execa('chmod', ['755', dir]);
    machine = await defineEmptyMachine({
      name: VM,
      dir,
      bridge: BRIDGE,
      mac: MAC,
      diskBytes: 256 * MiB,
      memoryMiB: 1024,
    });
  }, 900_000);

  afterAll(async () => {
    await machine?.remove();
    await server?.stop();
    await lan?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
    await rig?.stop();
  });

  it('boots the ramdisk, is provisioned, reboots into its disk; netboot is cleared', async () => {
    expect((await virsh(['start', VM])).exitCode).toBe(0);
    const console = await consoleShows(/IMGCTL-APPLIANCE hostname=nbhost /);
    // the ramdisk ran (its lines are on the console) before the appliance came up
    expect(console.indexOf('IMGCTL-RAMDISK')).toBeGreaterThanOrEqual(0);
    expect(console.indexOf('IMGCTL-RAMDISK')).toBeLessThan(console.indexOf('IMGCTL-APPLIANCE'));
    const status = JSON.parse(
      (await imgctl(['status', '--system', 'nbsys', '--json'])).stdout,
    ) as Array<{
      state: string;
      phases: Array<{ phase: string }>;
    }>;
    expect(status[0]!.state).toBe('done');
    expect(status[0]!.phases.map((p) => p.phase)).toEqual(
      expect.arrayContaining(['started', 'disks-ready', 'configured', 'done']),
    );
    expect(await readFile(join(rig.store.dir, 'systems/nbsys.yaml'), 'utf8')).toMatch(
      /netboot: false/,
    );
    // dnsmasq gave iPXE the server's script
    expect(lan!.log()).toContain(`${server!.url}/v1/boot/ipxe`);
  });

  it('a second network boot boots the local disk', async () => {
    await virsh(['destroy', VM]);
    expect((await virsh(['start', VM])).exitCode).toBe(0);
    const console = await consoleShows(/IMGCTL-APPLIANCE hostname=nbhost /, 240_000);
    expect(console).not.toContain('IMGCTL-RAMDISK');
  });

  it('a machine of an unknown MAC is told to boot its local disk: nothing is written', async () => {
    const stranger = await defineEmptyMachine({
      name: STRANGER,
      dir,
      bridge: BRIDGE,
      mac: STRANGER_MAC,
      diskBytes: 64 * MiB,
    });
    onTestFinished(() => stranger.remove());
    expect((await virsh(['start', STRANGER])).exitCode).toBe(0);
    // its own iPXE asked with its MAC, and was answered the local-boot script
    await server!.waitForLog(
      new RegExp(`boot ${STRANGER_MAC}: local boot: no system has this MAC address$`),
      240_000,
    );
    // its iPXE runs that script (a blank disk: nothing to boot) before the machine is stopped
    await sleep(15_000);
    await virsh(['destroy', STRANGER]);
    expect(server!.log()).not.toMatch(new RegExp(`boot ${STRANGER_MAC}: provisioning ramdisk`));
    const { stdout: blocks } = await execa('stat', ['-c', '%b', stranger.disk]);
    expect(Number(blocks), 'blocks written to its disk').toBe(0);
  });
});
