/**
 * imgagent --virt end to end, all real: the tiny appliance built with imgctl build, served by
 * imgctl serve on 127.0.0.1, provisioned by the agent binary through a real libvirtd (domain
 * type qemu), booted, and its serial console read back.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, cp, mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  AGENT_BIN,
  type AgentRig,
  runAgent,
  startAgentRig,
  virtFlags,
} from './helpers/agent-rig.ts';
import {
  hashTree,
  makeTempDir,
  startServer,
  type TempDir,
  type TestServer,
  MiB,
} from './helpers/index.ts';
import {
  domainExists,
  makeBridge,
  removeDomain,
  startLibvirt,
  virsh,
  waitForShutoff,
} from './helpers/libvirt.ts';
import { waitForApplianceReport } from './helpers/seed.ts';
import { type StallProxy, startStallProxy } from './helpers/stall-proxy.ts';

const BRIDGE = `imgbr${process.pid % 100000}`;
/** The libvirt domains this file defines, and removes before and after it runs. */
const DOMAINS = ['tiny01', 'tiny02', 'tinymem', 'tinyfull', 'tinybad', 'tinykill', 'tinyterm'];

describe('slow: imgagent --virt from the server to a running, configured VM', () => {
  let store: TempDir;
  let work: TempDir;
  let server: TestServer;
  let rig: AgentRig;
  let removeBridge: () => Promise<void>;
  let tokenFile: string;
  let rootSha: string;
  const paths = { virt: '', cache: '', logs: '' };

  /** The agent's flags for the test server, with this test's dirs and bridge, then `args`. */
  function agentArgs(args: string[], options: { server?: string; cache?: string } = {}) {
    return [
      '--server',
      options.server ?? server.url,
      '--token-file',
      tokenFile,
      '--connect',
      'qemu:///system',
      ...virtFlags(paths, BRIDGE, options.cache),
      ...args,
    ];
  }

  /** The real agent binary with agentArgs. */
  function agent(args: string[], options: { server?: string; cache?: string } = {}) {
    return runAgent(agentArgs(args, options));
  }

  /**
   * Waits for the appliance's report line in a VM's serial log, then for the VM to power off:
   * until then qemu holds its disks' write locks and may still write to them and to the log.
   */
  async function serialReport(vm: string) {
    const report = await waitForApplianceReport(join(paths.virt, `${vm}.serial.log`));
    await waitForShutoff(vm);
    return report;
  }

  /** A proxy to the server that holds the root blob's download still after its first 8 MiB. */
  async function stallingProxy() {
    const proxy = await startStallProxy(server.url, { stallAfter: 8 * MiB });
    onTestFinished(() => proxy.close());
    return proxy;
  }

  /**
   * Sends `signal` to the agent while the proxy holds its download of the root disk, once the
   * first bytes are in the cache's partial file; then lets the download go on. False when the
   * agent exited first.
   */
  async function signalMidDownload(
    child: ChildProcess,
    cache: string,
    proxy: StallProxy,
    signal: NodeJS.Signals,
  ): Promise<boolean> {
    const partial = join(cache, 'sha256', rootSha.slice(0, 2), `${rootSha}.partial`);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await Promise.race([proxy.stalled, exited]);
    while (child.exitCode === null && child.signalCode === null) {
      if (((await stat(partial).catch(() => undefined))?.size ?? 0) > 0) {
        child.kill(signal);
        proxy.release();
        return true;
      }
      await sleep(10);
    }
    proxy.release();
    return false;
  }

  beforeAll(async () => {
    await startLibvirt();
    // Left defined by an earlier run that was killed, they would make the first test exit 5.
    for (const vm of DOMAINS) await removeDomain(vm);
    rig = await startAgentRig('imgagent-virt-');
    ({ store, work, server, tokenFile, rootSha } = rig);
    Object.assign(paths, rig.paths);
    // A record asking for more memory than any test machine has.
    await writeFile(
      join(store.dir, 'images/tiny-linux/records/huge.yaml'),
      'apiVersion: imgctl/v1\nkind: ImageRecord\nname: huge\nimage: tiny-linux\nprovision:\n  memory: 64TiB\n',
    );
    removeBridge = await makeBridge(BRIDGE);
  }, 600_000);

  afterAll(async () => {
    for (const vm of DOMAINS) await removeDomain(vm);
    await removeBridge?.();
    await rig?.stop();
  });

  it('provisions tiny01: the VM boots with the hostname and instance-id of the plan and its data disk', async () => {
    onTestFinished(() => removeDomain('tiny01'));
    const run = await agent(['--virt', '--system', 'tiny01', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as {
      vm: string;
      instanceId: string;
      xml: string;
      started: boolean;
      virtType: string;
    };
    expect(result).toMatchObject({ vm: 'tiny01', started: true, virtType: 'qemu' });
    expect(result.instanceId).toMatch(/^tiny01-[0-9a-f]{8}$/);

    const report = await serialReport('tiny01');
    expect(report).toMatchObject({
      hostname: 'tiny01',
      'instance-id': result.instanceId,
      'data-disk': 'ok',
      boots: '1',
    });

    // The XML the agent generated, and the one libvirt keeps, pass libvirt's schema.
    const generated = join(work.dir, 'tiny01.generated.xml');
    await writeFile(generated, result.xml);
    const dumped = join(work.dir, 'tiny01.dumped.xml');
    await writeFile(dumped, (await virsh(['dumpxml', 'tiny01'])).stdout);
    for (const file of [generated, dumped]) {
      const check = await execa('virt-xml-validate', [file, 'domain'], { reject: false });
      expect(check.exitCode, check.stderr + check.stdout).toBe(0);
    }
    // The system disk is an overlay on the cached base, backing format explicit.
    const info = JSON.parse(
      (await execa('qemu-img', ['info', '--output=json', join(paths.virt, 'tiny01-root.qcow2')]))
        .stdout,
    ) as Record<string, string>;
    expect(info['backing-filename']).toBe(
      join(paths.cache, 'sha256', rootSha.slice(0, 2), rootSha),
    );
    expect(info['backing-filename-format']).toBe('raw');
    // provision.sh ran on the host with the plan's configuration, logged where §6 says.
    const log = await readFile(join(paths.logs, 'tiny-linux/tiny-linux_tiny01.log'), 'utf8');
    expect(log).toMatch(/provisioned tiny01 \(hostname tiny01\) from tiny-linux; stay_up=false/);
    // Every phase was reported to the server.
    const status = (await (await fetch(`${server.url}/v1/status?system=tiny01`)).json()) as Array<{
      state: string;
      phases: Array<{ phase: string }>;
    }>;
    expect(status[0]!.state).toBe('done');
    expect(status[0]!.phases.map((p) => p.phase)).toEqual([
      'started',
      'disks-ready',
      'configured',
      'defined',
      'booted',
      'done',
    ]);

    // The same command again, without --force: exit 5, and nothing changes.
    const before = [
      await hashTree(paths.virt),
      await hashTree(paths.cache),
      await virsh(['dumpxml', 'tiny01']),
    ];
    const again = await agent(['--virt', '--system', 'tiny01']);
    expect(again.exitCode, again.stderr).toBe(5);
    expect(again.stderr).toMatch(/error\[CONFLICT\]: VM 'tiny01' already exists/);
    const after = [
      await hashTree(paths.virt),
      await hashTree(paths.cache),
      await virsh(['dumpxml', 'tiny01']),
    ];
    expect(after).toEqual(before);
  });

  it('provisions a second VM of the same image with its own hostname, on the same cached base', async () => {
    onTestFinished(() => removeDomain('tiny02'));
    const run = await agent(['--virt', '--image', 'tiny-linux', '--virt-name', 'tiny02']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/disk root: sha256:\w+ is in the cache/);
    const report = await serialReport('tiny02');
    expect(report).toMatchObject({ hostname: 'tiny02', 'data-disk': 'ok' });
    expect(report['instance-id']).toMatch(/^tiny02-/);
    const info = JSON.parse(
      (await execa('qemu-img', ['info', '--output=json', join(paths.virt, 'tiny02-root.qcow2')]))
        .stdout,
    ) as Record<string, string>;
    expect(info['backing-filename']).toBe(
      join(paths.cache, 'sha256', rootSha.slice(0, 2), rootSha),
    );
    // One copy of the base in the cache.
    expect(await readdir(join(paths.cache, 'sha256', rootSha.slice(0, 2)))).toEqual([rootSha]);
  });

  it('fails clearly when the server is unreachable', async () => {
    const run = await agent(['--virt', '--system', 'tiny01'], { server: 'http://127.0.0.1:1' });
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/cannot reach the server at http:\/\/127\.0\.0\.1:1/);
  });

  it('refuses a VM that needs more memory than the host has: exit 6, every reason, nothing made', async () => {
    const run = await agent([
      '--virt',
      '--image',
      'tiny-linux',
      '--record',
      'huge',
      '--virt-name',
      'tinymem',
    ]);
    expect(run.exitCode, run.stderr).toBe(6);
    expect(run.stderr).toMatch(/error\[HOST\]/);
    expect(run.stderr).toMatch(/needs 64TiB of memory and .* is available/);
    expect(await domainExists('tinymem')).toBe(false);
    expect((await readdir(paths.virt)).filter((f) => f.startsWith('tinymem'))).toEqual([]);
  });

  it('refuses a --virt-path on a small full filesystem, leaving nothing behind', async () => {
    const small = join(work.dir, 'small');
    await mkdir(small);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs', small]);
    onTestFinished(() => execa('umount', [small]).then(() => undefined));
    await writeFile(join(small, 'filler'), Buffer.alloc(900 * 1024));
    const run = await agent([
      '--virt',
      '--image',
      'tiny-linux',
      '--virt-name',
      'tinyfull',
      '--virt-path',
      small,
    ]);
    expect(run.exitCode, run.stderr).toBe(6);
    expect(run.stderr).toContain(`--virt-path ${small}:`);
    expect(run.stderr).toMatch(/KiB free, 128MiB needed/);
    expect(await readdir(small)).toEqual(['filler']);
    expect(await domainExists('tinyfull')).toBe(false);
  });

  it('refuses a corrupted blob: exit 7, no domain, nothing in the cache', async () => {
    const bad = await makeTempDir('imgagent-bad-');
    await cp(store.dir, bad.dir, { recursive: true });
    const blob = join(bad.dir, '.blobs/sha256', rootSha.slice(0, 2), rootSha);
    await chmod(blob, 0o644);
    const handle = await open(blob, 'r+');
    await handle.write(Buffer.from('corrupted'), 0, 9, 1 << 20);
    await handle.close();
    const badServer = await startServer({
      storeDir: bad.dir,
      args: ['--write-token-file', tokenFile],
    });
    const cache = join(work.dir, 'cache-bad');
    const run = await agent(['--virt', '--image', 'tiny-linux', '--virt-name', 'tinybad'], {
      server: badServer.url,
      cache,
    });
    expect(run.exitCode, run.stderr).toBe(7);
    expect(run.stderr).toMatch(/error\[INTEGRITY\]: blob sha256:\w+ .* does not match its hash/);
    expect(await domainExists('tinybad')).toBe(false);
    expect((await readdir(paths.virt)).filter((f) => f.startsWith('tinybad'))).toEqual([]);
    expect(await readdir(join(cache, 'sha256', rootSha.slice(0, 2))).catch(() => [])).toEqual([]);
    const status = (await (
      await fetch(`${badServer.url}/v1/status?system=tinybad`)
    ).json()) as Array<{
      state: string;
      error: { code: string };
    }>;
    expect(status[0]).toMatchObject({ state: 'failed', error: { code: 'INTEGRITY' } });
  });

  it('on SIGTERM mid-download stops, removes what it made and reports the failure', async () => {
    onTestFinished(() => removeDomain('tinyterm'));
    const cache = join(work.dir, 'cache-term');
    const proxy = await stallingProxy();
    const child: ChildProcess = spawn(
      process.execPath,
      [
        AGENT_BIN,
        ...agentArgs(['--virt', '--image', 'tiny-linux', '--virt-name', 'tinyterm', '--no-start'], {
          cache,
          server: proxy.url,
        }),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    );
    const signalled = await signalMidDownload(child, cache, proxy, 'SIGTERM');
    const code = await exited;
    expect(signalled, 'SIGTERM was sent while the blob was arriving').toBe(true);
    expect(code, stderr).toBe(1);
    expect(stderr).toContain('imgagent: SIGTERM: stopping and removing what this run made');
    expect(stderr).toMatch(/error\[FAILED\]: interrupted by SIGTERM/);
    expect(await domainExists('tinyterm')).toBe(false);
    const left = await readdir(paths.virt).catch(() => []);
    expect(left.filter((f) => f.startsWith('tinyterm'))).toEqual([]);
    const status = (await (
      await fetch(`${server.url}/v1/status?system=tinyterm`)
    ).json()) as Array<{ state: string; error: { message: string } }>;
    expect(status[0]).toMatchObject({
      state: 'failed',
      error: { message: 'interrupted by SIGTERM' },
    });
  });

  it('completes after being SIGKILLed mid-download', async () => {
    onTestFinished(() => removeDomain('tinykill'));
    const cache = join(work.dir, 'cache-kill');
    const proxy = await stallingProxy();
    const args = [
      AGENT_BIN,
      ...agentArgs(['--virt', '--image', 'tiny-linux', '--virt-name', 'tinykill', '--no-start'], {
        cache,
        server: proxy.url,
      }),
    ];
    const child: ChildProcess = spawn(process.execPath, args, { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const killed = await signalMidDownload(child, cache, proxy, 'SIGKILL');
    await exited;
    expect(killed, 'the agent was killed while the blob was arriving').toBe(true);
    expect(await domainExists('tinykill')).toBe(false);

    const again = await agent(
      ['--virt', '--image', 'tiny-linux', '--virt-name', 'tinykill', '--no-start'],
      { cache },
    );
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/resuming disk root at|pulled disk root/);
    expect(await domainExists('tinykill')).toBe(true);
    const blob = join(cache, 'sha256', rootSha.slice(0, 2), rootSha);
    const sum = await execa('sha256sum', [blob]);
    expect(sum.stdout.split(' ')[0]).toBe(rootSha);
  });
});
