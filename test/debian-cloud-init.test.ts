/**
 * A real distribution end to end: images/debian-12 (Debian 12 with its own cloud-init 22.4,
 * built from Debian packages by `imgctl build debian-12`) provisioned by the real agent with
 * `--virt` (real libvirt, a host bridge) and with `--replace-self` onto a file then booted by
 * qemu (user networking). From inside each guest, over SSH with the system's key: cloud-init
 * finished without errors from the NoCloud seed and applied the hostname and FQDN, root's key,
 * the login user `admin` with its key and hashed password, the static address, DNS, and a
 * default route via the gateway that carries traffic to an address off the subnet.
 *
 * Slow: the first build takes ~3.5 min (mmdebstrap); the disk is then cached under the
 * recipe's hash outside the clone ($IMGCTL_TEST_CACHE, default /var/cache/imgctl-test). Each
 * boot takes ~45 s under software emulation.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { runAgent, virtFlags } from './helpers/agent-rig.ts';
import { copyExampleStore, execImgctl, makeTempDir, type TempDir } from './helpers/index.ts';
import { makeBridge, removeDomain, startLibvirt } from './helpers/libvirt.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { makeSshKey } from './helpers/sshd.ts';

const CACHE = process.env.IMGCTL_TEST_CACHE ?? '/var/cache/imgctl-test';
const N = process.pid % 250;
const BRIDGE = `imgdeb${N}`;
/** the --virt guest's subnet on the bridge, and an address of this host off that subnet */
const SUBNET = `10.231.${N}`;
const OFF_SUBNET = `10.232.${N}.1`;
const VM = 'debvirt';
const PASSWORD = 'correct horse battery staple';

interface Guest {
  /** runs a command line in the guest as `user` over SSH with the system's key */
  ssh(command: string, user?: string): Promise<{ exitCode: number; stdout: string }>;
  serialLog: string;
}

describe('slow: Debian 12 with cloud-init, provisioned by imgagent', () => {
  let store: TempDir;
  let work: TempDir;
  let server: TestServer;
  let tokenFile: string;
  let key: string;
  /** what guests sent to the listener, which they reach through their default route */
  const received: string[] = [];
  let listener: Server;
  let listenPort: number;

  beforeAll(async () => {
    await startLibvirt();
    await removeDomain(VM);
    store = await copyExampleStore();
    const build = await execImgctl(['--store', store.dir, 'build', 'debian-12'], {
      env: { IMGCTL_BUILD_CACHE: CACHE },
    });
    if (build.exitCode !== 0) throw new Error(`imgctl build debian-12 failed:\n${build.stderr}`);
    work = await makeTempDir('imgctl-debian-');
    // qemu runs as libvirt-qemu: it must reach the disks through world-traversable dirs
    await chmod(work.dir, 0o755);
    tokenFile = join(work.dir, 'token');
    await writeFile(tokenFile, `${'d3b1an'.repeat(6)}\n`, { mode: 0o600 });
    server = await startServer({ storeDir: store.dir, args: ['--write-token-file', tokenFile] });
    key = await makeSshKey(join(work.dir, 'id_ed25519'));
    listener = createServer((socket) => {
      socket.setEncoding('utf8').on('data', (text: string) => received.push(text.trim()));
    });
    await new Promise<void>((resolve) => listener.listen(0, '0.0.0.0', resolve));
    listenPort = (listener.address() as { port: number }).port;
  }, 1_200_000);

  afterAll(async () => {
    await removeDomain(VM);
    listener?.close();
    await server?.stop();
    await work?.cleanup();
    await store?.cleanup();
  });

  /** systems/NAME.yaml: the test's key, the admin user's password, one static interface. */
  async function writeSystem(
    name: string,
    iface: { mac: string; ip: string; gateway: string; dns: string },
    extra: string[] = [],
  ): Promise<void> {
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
    await writeFile(
      join(store.dir, 'systems', `${name}.yaml`),
      [
        'apiVersion: imgctl/v1',
        'kind: System',
        `name: ${name}`,
        `hostname: ${name}.example.test`,
        'image: debian-12',
        'interfaces:',
        '  - name: eth0',
        `    mac: "${iface.mac}"`,
        `    ip: ${iface.ip}`,
        `    gateway: ${iface.gateway}`,
        `    dns: [${iface.dns}]`,
        'ssh_authorized_keys:',
        `  - ${pub}`,
        'parameters:',
        `  login_password_admin: ${PASSWORD}`,
        ...extra,
        '',
      ].join('\n'),
    );
  }

  function guestAt(host: string, port: number, serialLog: string): Guest {
    return {
      serialLog,
      async ssh(command, user = 'root') {
        const run = await execa(
          'ssh',
          [
            ...['-i', key, '-p', String(port), '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'],
            ...['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'],
            ...['-o', 'ConnectTimeout=5', `${user}@${host}`, command],
          ],
          { reject: false, timeout: 120_000 },
        );
        return { exitCode: run.exitCode ?? -1, stdout: run.stdout };
      },
    };
  }

  /** Waits until root logs in and cloud-init has finished; fails with the serial console. */
  async function waitForGuest(guest: Guest, timeoutMs = 420_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const run = await guest.ssh('cloud-init status --wait >/dev/null; echo ready');
      if (run.exitCode === 0 && run.stdout.trim() === 'ready') return;
      if (Date.now() > deadline) {
        const serial = await readFile(guest.serialLog, 'utf8').catch(() => '(no serial log)');
        throw new Error(
          `no SSH login as root after ${timeoutMs} ms (last: exit ${run.exitCode} ${run.stdout}); serial console:\n${serial.slice(-6000)}`,
        );
      }
      await sleep(3000);
    }
  }

  /** Everything the issue asks of a provisioned guest, checked from inside it. */
  async function checkGuest(
    guest: Guest,
    name: string,
    net: { ip: string; gateway: string; dns: string; offSubnet: string },
  ): Promise<void> {
    const sh = async (command: string, user?: string) => {
      const run = await guest.ssh(command, user);
      expect(run.exitCode, `${command}: ${run.stdout}`).toBe(0);
      return run.stdout.trim();
    };
    // cloud-init finished, from the NoCloud seed, without errors
    const status = JSON.parse(await sh('cloud-init status --long --format json')) as {
      status: string;
      errors: string[];
      datasource: string;
    };
    expect(status).toMatchObject({ status: 'done', errors: [], datasource: 'nocloud' });
    expect(await sh('grep -c "WARNING\\|ERROR\\|Traceback" /var/log/cloud-init.log || true')).toBe(
      '0',
    );
    // identity
    expect(await sh('hostname')).toBe(name);
    expect(await sh('hostname -f')).toBe(`${name}.example.test`);
    // root's key logged us in; root has a shell, not the "login as NONE" message
    expect(await sh('id -un')).toBe('root');
    // the admin user: the same key, the password hashed (checked against the hash's salt)
    expect(await sh('id -un', 'admin')).toBe('admin');
    const hash = (await sh('getent shadow admin')).split(':')[1]!;
    expect(hash).toMatch(/^\$6\$/);
    const salt = hash.split('$')[2]!;
    const { stdout: expected } = await execa('openssl', ['passwd', '-6', '-salt', salt, '-stdin'], {
      input: `${PASSWORD}\n`,
    });
    expect(hash).toBe(expected.trim());
    // the static address, renamed eth0 by its MAC; DNS; the default route via the gateway
    expect(await sh('ip -4 -o addr show dev eth0')).toContain(`inet ${net.ip}`);
    expect(await sh('grep ^nameserver /etc/resolv.conf')).toContain(`nameserver ${net.dns}`);
    expect(await sh('ip -4 route show default')).toMatch(
      new RegExp(`^default via ${net.gateway.replaceAll('.', '\\.')} dev eth0`),
    );
    // and it carries traffic: an address of this host outside the guest's subnet
    await sh(
      `timeout 20 bash -c 'echo hello-from-${name} >/dev/tcp/${net.offSubnet}/${listenPort}'`,
    );
    for (let i = 0; i < 50 && !received.includes(`hello-from-${name}`); i++) await sleep(100);
    expect(received).toContain(`hello-from-${name}`);
  }

  it('--virt: a libvirt VM on a bridge, configured by cloud-init from the seed ISO', async () => {
    const removeBridge = await makeBridge(BRIDGE);
    onTestFinished(removeBridge);
    await execa('ip', ['addr', 'add', `${SUBNET}.1/24`, 'dev', BRIDGE]);
    await execa('ip', ['addr', 'add', `${OFF_SUBNET}/32`, 'dev', BRIDGE]);
    const ip = `${SUBNET}.10`;
    await writeSystem(VM, {
      mac: '52:54:00:de:b1:01',
      ip: `${ip}/24`,
      gateway: `${SUBNET}.1`,
      dns: `${SUBNET}.53`,
    });
    const paths = {
      virt: join(work.dir, 'vms'),
      cache: join(work.dir, 'cache'),
      logs: join(work.dir, 'logs'),
    };
    const run = await runAgent([
      ...['--server', server.url, '--token-file', tokenFile],
      ...['--virt', '--system', VM, '--virt-name', VM],
      ...virtFlags(paths, BRIDGE),
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const guest = guestAt(ip, 22, join(paths.virt, `${VM}.serial.log`));
    await waitForGuest(guest);
    await checkGuest(guest, VM, {
      ip,
      gateway: `${SUBNET}.1`,
      dns: `${SUBNET}.53`,
      offSubnet: OFF_SUBNET,
    });
  });

  it('--replace-self: written over a disk file with its config partition, booted by qemu', async () => {
    const name = 'debself';
    const target = join(work.dir, 'debself.raw');
    await execa('truncate', ['-s', String(2048 * 1024 * 1024 + 16 * 1024 * 1024), target]);
    // qemu's user network: 10.0.2.0/24, gateway 10.0.2.2, DNS 10.0.2.3
    await writeSystem(name, {
      mac: '52:54:00:de:b1:02',
      ip: '10.0.2.15/24',
      gateway: '10.0.2.2',
      dns: '10.0.2.3',
    });
    const run = await runAgent([
      ...['--server', server.url, '--token-file', tokenFile],
      ...['--cache-dir', join(work.dir, 'cache'), '--log-dir', join(work.dir, 'logs')],
      ...['--replace-self', '--system', name, '--target-disk', target],
    ]);
    expect(run.exitCode, run.stderr).toBe(0);

    const port = await freePort();
    const serialLog = join(work.dir, `${name}.serial.log`);
    const qemu: ChildProcess = spawn(
      'qemu-system-x86_64',
      [
        ...['-machine', 'accel=tcg', '-smp', '2', '-m', '1024', '-display', 'none'],
        ...['-monitor', 'none', '-serial', `file:${serialLog}`],
        ...['-drive', `file=${target},format=raw,if=virtio`],
        '-nic',
        `user,model=virtio-net-pci,mac=52:54:00:de:b1:02,hostfwd=tcp:127.0.0.1:${port}-:22`,
      ],
      { stdio: 'ignore' },
    );
    onTestFinished(() => {
      qemu.kill('SIGKILL');
    });
    const guest = guestAt('127.0.0.1', port, serialLog);
    await waitForGuest(guest);
    // off the user network's subnet: this host's own address, reached through the gateway
    await checkGuest(guest, name, {
      ip: '10.0.2.15',
      gateway: '10.0.2.2',
      dns: '10.0.2.3',
      offSubnet: hostAddress(),
    });
    // the config partition the agent added: the third, after the image's boot and root
    expect(await guest.ssh('blkid -L cidata || blkid -L CIDATA')).toMatchObject({
      stdout: '/dev/vda3',
    });
  });
});

/** An IPv4 address of this host outside 10.0.2.0/24 and loopback. */
function hostAddress(): string {
  for (const addresses of Object.values(networkInterfaces()))
    for (const a of addresses ?? [])
      if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('10.0.2.')) return a.address;
  throw new Error('this host has no IPv4 address besides loopback');
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
