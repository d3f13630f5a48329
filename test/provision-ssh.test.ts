/**
 * imgctl provision end to end, all real: an OpenSSH sshd on 127.0.0.1 started here (its own
 * host key and authorized_keys; the target is this machine as root), the real `imgctl serve`,
 * a real libvirtd, and the tiny appliance booting with its system's hostname. Host keys are
 * checked (changed ones refused, unknown ones only with --accept-new, hashed entries read), an
 * unreachable target is reported while the others carry on, a target without Node.js gets the
 * self-contained agent, and one where neither agent can run is told exactly what is missing.
 */
import { copyFile, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest';
import { type AgentRig, startAgentRig, virtFlags } from './helpers/agent-rig.ts';
import { execImgctl, IMGCTL_BIN, type TempDir, type TestServer } from './helpers/index.ts';
import { makeBridge, removeDomain, startLibvirt } from './helpers/libvirt.ts';
import { waitForApplianceReport } from './helpers/seed.ts';
import { makeSshKey, startSshd, type TestSshd } from './helpers/sshd.ts';

const BRIDGE = `imgpb${process.pid % 100000}`;
/** The libvirt domains this file defines, and removes before and after it runs. */
const DOMAINS = ['sshtiny01', 'tinyssh', 'sshnonode'];

interface Summary {
  ok: boolean;
  targets: Array<{
    target: string;
    status: string;
    agent?: string;
    agentCopied?: boolean;
    node?: string;
    result?: { vm: string; started: boolean; dryRun: boolean; hostname: string };
    error?: { code: string; message: string; hint?: string };
  }>;
}

describe('slow: imgctl provision over SSH', () => {
  let rig: AgentRig;
  let store: TempDir;
  let work: TempDir;
  let server: TestServer;
  let sshd: TestSshd;
  let removeBridge: () => Promise<void>;
  let tokenFile: string;
  let knownHosts: string;
  let agentBundle: string;
  const paths = { virt: '', cache: '', logs: '' };

  /** `imgctl provision TARGETS… --virt --image tiny-linux` with this test's server, dirs and key. */
  function provision(targets: string[], args: string[], hosts = knownHosts, bundle = agentBundle) {
    return execImgctl(
      [
        'provision',
        ...targets,
        '--virt',
        '--image',
        'tiny-linux',
        '--server',
        server.url,
        '--token-file',
        tokenFile,
        '--identity',
        sshd.clientKey,
        '--known-hosts',
        hosts,
        ...virtFlags(paths, BRIDGE),
        ...args,
      ],
      { cwd: store.dir, env: { IMGCTL_AGENT_BUNDLE: bundle } },
    );
  }

  beforeAll(async () => {
    await startLibvirt();
    // Left defined by an earlier run that was killed, they would make the first test exit 5.
    for (const vm of DOMAINS) await removeDomain(vm);
    rig = await startAgentRig('imgctl-provision-');
    ({ store, work, server, tokenFile } = rig);
    Object.assign(paths, rig.paths);
    removeBridge = await makeBridge(BRIDGE);
    // The run's shared build (test/global-setup.ts): the bundle, the executable beside it.
    agentBundle = join(inject('distDir'), 'imgagent.mjs');
    sshd = await startSshd();
    knownHosts = join(work.dir, 'known_hosts');
    await writeFile(knownHosts, `${sshd.knownHostsLine}\n`);
  }, 600_000);

  afterAll(async () => {
    for (const vm of DOMAINS) await removeDomain(vm);
    await sshd?.stop();
    await removeBridge?.();
    await rig?.stop();
  });

  it('provisions tiny01 through the agent over SSH: the appliance boots with its hostname', async () => {
    // A VM name of its own: agent-virt's tests define tiny01 on the same libvirt.
    onTestFinished(() => removeDomain('sshtiny01'));
    const run = await provision([sshd.target], ['--system', 'tiny01', '--virt-name', 'sshtiny01']);
    expect(run.exitCode, run.stderr + run.stdout).toBe(0);
    // Plain lines on stderr, prefixed by the target: its phases and the agent's own lines.
    expect(run.stderr).toContain(`${sshd.target}: running agent`);
    expect(run.stderr).toMatch(new RegExp(`^${escape(sshd.target)}: imgagent: .*sshtiny01`, 'm'));
    // The summary table on stdout.
    expect(run.stdout).toMatch(
      new RegExp(`^${escape(sshd.target)} .* ok .*vm sshtiny01, agent (copied|up to date)$`, 'm'),
    );
    expect(run.stdout).toMatch(/all 1 target\(s\) provisioned/);

    const report = await waitForApplianceReport(join(paths.virt, 'sshtiny01.serial.log'));
    expect(report).toMatchObject({ hostname: 'tiny01', 'data-disk': 'ok', boots: '1' });

    // The agent reported every phase to the server: the token reached it (events need it).
    const status = (await (await fetch(`${server.url}/v1/status?system=tiny01`)).json()) as Array<{
      state: string;
    }>;
    expect(status[0]!.state).toBe('done');

    // The agent sits in the SSH user's ~/.cache/imgctl.
    const remote = await readFile(join(homedir(), '.cache/imgctl/imgagent.mjs'), 'utf8');
    expect(remote.startsWith('#!/usr/bin/env node')).toBe(true);

    // Again with --json: the same agent is not copied again; the agent's result is collected.
    const again = await provision([sshd.target], ['--virt-name', 'tinyssh', '--dry-run', '--json']);
    expect(again.exitCode, again.stderr).toBe(0);
    const summary = JSON.parse(again.stdout) as Summary;
    expect(summary.ok).toBe(true);
    expect(summary.targets).toHaveLength(1);
    expect(summary.targets[0]).toMatchObject({
      target: sshd.target,
      status: 'ok',
      node: process.version,
      agentCopied: false,
      result: { vm: 'tinyssh', dryRun: true, started: false },
    });
  });

  it('refuses a changed host key (also with --accept-new); an unknown one only with --accept-new', async () => {
    // known_hosts naming this sshd with another key: refused, exit 7, the file untouched.
    const other = await makeSshKey(join(work.dir, 'other_host_key'));
    const otherPub = (await readFile(`${other}.pub`, 'utf8')).trim().split(' ');
    const wrong = join(work.dir, 'known_hosts.wrong');
    const wrongText = `[127.0.0.1]:${sshd.port} ${otherPub[0]} ${otherPub[1]}\n`;
    await writeFile(wrong, wrongText);
    for (const extra of [[], ['--accept-new']]) {
      const run = await provision([sshd.target], ['--dry-run', ...extra], wrong);
      expect(run.exitCode, run.stderr).toBe(7);
      expect(run.stderr).toMatch(/the host key of root@127\.0\.0\.1:\d+ has CHANGED/);
      expect(run.stdout).toMatch(/failed/);
      expect(await readFile(wrong, 'utf8')).toBe(wrongText);
    }

    // An empty known_hosts: refused with a hint, then accepted and recorded with --accept-new.
    const empty = join(work.dir, 'ssh', 'known_hosts.new');
    await mkdir(join(work.dir, 'ssh'));
    const refused = await provision([sshd.target], ['--dry-run'], empty);
    expect(refused.exitCode, refused.stderr).toBe(1);
    expect(refused.stderr).toMatch(/host key of root@127\.0\.0\.1:\d+ is unknown/);
    expect(refused.stderr).toMatch(/--accept-new/);
    const accepted = await provision([sshd.target], ['--dry-run', '--accept-new'], empty);
    expect(accepted.exitCode, accepted.stderr).toBe(0);
    expect((await readFile(empty, 'utf8')).trim()).toBe(sshd.knownHostsLine);

    // The same entry hashed by ssh-keygen -H is recognised.
    const hashed = join(work.dir, 'known_hosts.hashed');
    await writeFile(hashed, `${sshd.knownHostsLine}\n`);
    await execa('ssh-keygen', ['-H', '-f', hashed]);
    expect(await readFile(hashed, 'utf8')).toMatch(/^\|1\|/);
    const viaHashed = await provision([sshd.target], ['--dry-run'], hashed);
    expect(viaHashed.exitCode, viaHashed.stderr).toBe(0);
  });

  it('reports an unreachable target in the summary while the others carry on', async () => {
    const run = await provision(
      ['root@127.0.0.1:1', sshd.target],
      ['--virt-name', 'tinyssh', '--dry-run', '--json'],
    );
    expect(run.exitCode, run.stderr).toBe(1);
    const summary = JSON.parse(run.stdout) as Summary;
    expect(summary.ok).toBe(false);
    expect(summary.targets.map((t) => [t.target, t.status])).toEqual([
      ['root@127.0.0.1:1', 'failed'],
      [sshd.target, 'ok'],
    ]);
    expect(summary.targets[0]!.error?.message).toMatch(
      /cannot connect to root@127\.0\.0\.1:1: connection refused/,
    );

    const plain = await provision(['root@127.0.0.1:1', sshd.target], ['--dry-run']);
    expect(plain.exitCode).toBe(1);
    expect(plain.stdout).toMatch(/^root@127\.0\.0\.1:1 .* failed .*connection refused$/m);
    expect(plain.stdout).toMatch(/1 of 2 target\(s\) not provisioned/);
  });

  it('Ctrl-C starts no new target and stops the running agent on the target', async () => {
    // A stand-in agent that runs until it is stopped, recording its pid and the signal.
    const agent = join(work.dir, 'slow-agent.mjs');
    const pidFile = join(work.dir, 'slow-agent.pid');
    await writeFile(
      agent,
      [
        '#!/usr/bin/env node',
        "import { writeFileSync } from 'node:fs';",
        `writeFileSync(${JSON.stringify(pidFile)}, String(process.pid));`,
        "process.on('SIGTERM', () => { writeFileSync(" +
          JSON.stringify(`${pidFile}.term`) +
          ", 'TERM'); process.exit(143); });",
        "process.stderr.write('imgagent: working\\n');",
        'setInterval(() => {}, 1000);',
        '',
      ].join('\n'),
    );
    const child = execa(
      process.execPath,
      [
        IMGCTL_BIN,
        'provision',
        sshd.target,
        'root@127.0.0.1:1',
        'root@127.0.0.1:2',
        '--parallel',
        '1',
        '--virt',
        '--image',
        'tiny-linux',
        '--server',
        server.url,
        '--identity',
        sshd.clientKey,
        '--known-hosts',
        knownHosts,
      ],
      {
        reject: false,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, IMGCTL_AGENT_BUNDLE: agent },
        extendEnv: false,
      },
    );
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (chunk: Buffer) => {
        stderr += String(chunk);
        if (stderr.includes(`${sshd.target}: imgagent: working`)) resolve();
      });
      child.on('exit', () => reject(new Error(`imgctl exited early:\n${stderr}`)));
    });
    const interruptedAt = Date.now();
    child.kill('SIGINT');
    const run = await child;
    expect(Date.now() - interruptedAt).toBeLessThan(10_000);
    expect(run.exitCode, run.stderr).toBe(130);
    expect(run.stdout).toMatch(new RegExp(`^${escape(sshd.target)} .* cancelled `, 'm'));
    expect(run.stdout).toMatch(/^root@127\.0\.0\.1:1 .* not-started/m);
    expect(run.stdout).toMatch(/^root@127\.0\.0\.1:2 .* not-started/m);
    expect(run.stdout).toMatch(/3 of 3 target\(s\) not provisioned \(interrupted\)/);
    // The remote agent got SIGTERM and is gone.
    expect(await readFile(`${pidFile}.term`, 'utf8')).toBe('TERM');
    const pid = Number(await readFile(pidFile, 'utf8'));
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it('provisions a VM on a target without Node: the self-contained agent, copied once', async () => {
    onTestFinished(() => removeDomain('sshnonode'));
    // The target's PATH: every program of /usr/bin and /usr/sbin but node.
    const bin = join(work.dir, 'no-node-bin');
    await mkdir(bin);
    for (const dir of ['/usr/sbin', '/usr/bin'])
      for (const name of await readdir(dir))
        if (!['node', 'nodejs'].includes(name))
          await symlink(join(dir, name), join(bin, name)).catch(() => undefined);
    const nonode = await startSshd({ clientKey: sshd.clientKey, sessionEnv: { PATH: bin } });
    onTestFinished(() => nonode.stop());
    const hosts = join(work.dir, 'known_hosts.nonode');
    await writeFile(hosts, `${nonode.knownHostsLine}\n`);
    await execa('rm', ['-f', join(homedir(), '.cache/imgctl/imgagent-linux-x64')]);

    const run = await provision(
      [nonode.target],
      ['--system', 'tiny01', '--virt-name', 'sshnonode'],
      hosts,
    );
    expect(run.exitCode, run.stderr + run.stdout).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(
        `^${escape(nonode.target)} .* ok .*vm sshnonode, self-contained agent copied$`,
        'm',
      ),
    );
    const report = await waitForApplianceReport(join(paths.virt, 'sshnonode.serial.log'));
    expect(report).toMatchObject({ hostname: 'tiny01', boots: '1' });
    const copied = await readFile(join(homedir(), '.cache/imgctl/imgagent-linux-x64'));
    expect(copied.equals(await readFile(join(inject('distDir'), 'imgagent-linux-x64')))).toBe(true);

    const again = await provision(
      [nonode.target],
      ['--virt-name', 'tinyssh', '--dry-run', '--json'],
      hosts,
    );
    expect(again.exitCode, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as Summary).targets[0]).toMatchObject({
      status: 'ok',
      agent: 'executable',
      agentCopied: false,
      result: { vm: 'tinyssh', dryRun: true },
    });
    expect((JSON.parse(again.stdout) as Summary).targets[0]!.node).toBeUndefined();
  });

  it('an update rollout whose canary fails touches no other target (--update --canary 1 --max-unavailable 1)', async () => {
    const others = [
      await startSshd({ clientKey: sshd.clientKey }),
      await startSshd({ clientKey: sshd.clientKey }),
    ];
    onTestFinished(() => Promise.all(others.map((o) => o.stop())).then(() => undefined));
    const hosts = join(work.dir, 'known_hosts.rollout');
    await writeFile(hosts, [sshd, ...others].map((s) => `${s.knownHostsLine}\n`).join(''));
    // an update whose canary fails: that target has no such VM
    const run = await provision(
      [sshd.target, ...others.map((o) => o.target)],
      ['--update', '--virt-name', 'nosuchvm', '--canary', '1', '--max-unavailable', '1', '--json'],
      hosts,
    );
    expect(run.exitCode, run.stderr).toBe(4);
    const summary = JSON.parse(run.stdout) as Summary & { stoppedBy?: string };
    expect(summary.stoppedBy).toBe(sshd.target);
    expect(summary.targets[0]!.error?.message).toBe("no VM 'nosuchvm' on this host");
    expect(summary.targets.map((t) => t.status)).toEqual(['failed', 'not-started', 'not-started']);
    expect(summary.targets[1]!.error?.message).toBe(
      `not started: the rollout stopped when ${sshd.target} failed`,
    );
    // nobody logged in to the others
    for (const other of others) expect(other.log()).not.toMatch(/Accepted publickey/);
    expect(sshd.log()).toMatch(/Accepted publickey/);
  });

  it('says exactly what is missing where neither agent can run', async () => {
    // A bundle with no executable beside it, and targets with an old Node or none.
    const bundleOnly = join(work.dir, 'bundle-only');
    await mkdir(bundleOnly);
    await copyFile(agentBundle, join(bundleOnly, 'imgagent.mjs'));
    const bin = join(work.dir, 'old-node-bin');
    await mkdir(bin);
    await writeFile(join(bin, 'node'), '#!/bin/sh\necho v18.19.1\n', { mode: 0o755 });
    const old = await startSshd({
      clientKey: sshd.clientKey,
      sessionEnv: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin` },
    });
    const none = await startSshd({
      clientKey: sshd.clientKey,
      sessionEnv: { PATH: join(work.dir, 'empty-bin') },
    });
    onTestFinished(() => Promise.all([old.stop(), none.stop()]).then(() => undefined));
    const hosts = join(work.dir, 'known_hosts.node');
    await writeFile(hosts, `${old.knownHostsLine}\n${none.knownHostsLine}\n`);
    const run = await provision(
      [old.target, none.target],
      ['--dry-run', '--json'],
      hosts,
      join(bundleOnly, 'imgagent.mjs'),
    );
    expect(run.exitCode, run.stderr).toBe(6);
    const summary = JSON.parse(run.stdout) as Summary;
    const missing = `the self-contained agent cannot run there: ${join(bundleOnly, 'imgagent-linux-x64')} is missing`;
    expect(summary.targets[0]!.error).toMatchObject({
      code: 'HOST',
      message: `${old.target} has Node.js v18.19.1; the agent bundle needs Node.js >= 20.19, and ${missing}`,
    });
    expect(summary.targets[1]!.error).toMatchObject({ code: 'HOST' });
    expect(summary.targets[1]!.error!.message).toMatch(
      /has no node command .*, and the self-contained/,
    );
    expect(summary.targets[1]!.error!.hint).toMatch(
      /npm run build .*; or install Node\.js >= 20\.19 on the target/,
    );
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
