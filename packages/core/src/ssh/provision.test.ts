import { describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import {
  type ProvisionDeps,
  type ProvisionEvent,
  type ProvisionTarget,
  provisionTargets,
  REMOTE_AGENT,
  REMOTE_EXECUTABLE,
  summaryExitCode,
} from './provision.ts';
import type { ExecOptions, ExecResult, RemoteShell } from './ssh.ts';

const SHA = 'a'.repeat(64);
const EXE_SHA = 'e'.repeat(64);

interface FakeHost {
  /** what `node --version` prints, and its exit code */
  node?: { exitCode: number; output: string };
  /** `uname -sm` (default Linux x86_64) and `getconf GNU_LIBC_VERSION` (default glibc 2.36) */
  platform?: string;
  libc?: string;
  /** the sha256 of the copies already there, by remote path */
  sums?: Record<string, string>;
  /** the copy script's result (default: success) */
  copy?: ExecResult;
  agent?: (options: ExecOptions) => Promise<ExecResult>;
  connectError?: ImgctlError;
}

/** A fake target: answers the probe, the copy and the agent; records every call. */
function fakeDeps(hosts: Record<string, FakeHost>) {
  const calls: Array<{ host: string; argv: readonly string[]; options?: ExecOptions }> = [];
  const copies: string[] = [];
  const reads: string[] = [];
  const events: ProvisionEvent[] = [];
  let running = 0;
  let maxRunning = 0;
  const deps: ProvisionDeps = {
    async connect(target) {
      const host = hosts[target.host]!;
      if (host.connectError) throw host.connectError;
      running++;
      maxRunning = Math.max(maxRunning, running);
      const shell: RemoteShell = {
        async exec(argv, options) {
          calls.push({ host: target.host, argv, options });
          if (argv[0] === '/bin/sh' && argv[3] === 'imgctl-probe') {
            const node = host.node ?? { exitCode: 0, output: 'v20.19.0' };
            const sums = Object.entries(host.sums ?? {}).map(([path, sum]) => `${sum}  ${path}\n`);
            return {
              exitCode: 0,
              stdout: [
                `${node.output}\nnode-exit=${node.exitCode}\n`,
                `${host.platform ?? 'Linux x86_64'}\n${host.libc ?? 'glibc 2.36'}\n`,
                ...sums,
              ].join(''),
              stderr: '',
            };
          }
          if (argv[0] === '/bin/sh' && argv[3] === 'imgctl-copy') {
            copies.push(`${target.host}:${argv[4]}:${argv[5]}:${options?.stdin?.length}`);
            return host.copy ?? { exitCode: 0, stdout: '', stderr: '' };
          }
          options?.onStderrLine?.('imgagent: working');
          return host.agent
            ? host.agent(options ?? {})
            : { exitCode: 0, stdout: '{"vm":"tiny01"}\n', stderr: '' };
        },
        close() {
          running--;
        },
      };
      return shell;
    },
    async readAgent(path) {
      reads.push(path);
      return { sha256: path === base.agentBundle ? SHA : EXE_SHA, gzipped: new Uint8Array(3) };
    },
    now: () => 0,
    onEvent: (e) => events.push(e),
  };
  return { deps, calls, copies, reads, events, maxRunning: () => maxRunning };
}

const target = (host: string, system?: string): ProvisionTarget => ({
  label: host,
  ssh: { user: 'root', host, port: 22 },
  ...(system ? { system } : {}),
});

const base = {
  agentBundle: '/dist/imgagent.mjs',
  agentExecutable: { path: '/dist/imgagent-linux-x64' },
  server: 'http://imgsrv:8460',
  agentArgs: ['--virt', '--image', 'tiny-linux'],
};

describe('provisionTargets', () => {
  it('copies the agent only where it differs, runs it with --json, the token and sets only on stdin', async () => {
    const fake = fakeDeps({ hv1: {}, hv2: { sums: { [REMOTE_AGENT]: SHA } } });
    const summary = await provisionTargets(
      {
        ...base,
        targets: [target('hv1', 'web01'), target('hv2')],
        token: 's3cr3t',
        sets: ['db_password=hunter2'],
      },
      fake.deps,
    );
    expect(summary.ok).toBe(true);
    expect(summary.targets.map((t) => [t.target, t.status, t.agent, t.agentCopied])).toEqual([
      ['hv1', 'ok', 'node', true],
      ['hv2', 'ok', 'node', false],
    ]);
    expect(summary.targets[0]!.result).toEqual({ vm: 'tiny01' });
    // gzip bytes on the copy's stdin, checked against the sha256 on the target; read once
    expect(fake.copies).toEqual([`hv1:${REMOTE_AGENT}:${SHA}:3`]);
    expect(fake.reads).toEqual([base.agentBundle]);
    const agentRuns = fake.calls.filter((c) => c.argv[1] === REMOTE_AGENT && c.host === 'hv1');
    expect(agentRuns[0]!.argv).toEqual([
      'node',
      REMOTE_AGENT,
      '--server',
      'http://imgsrv:8460',
      '--json',
      '--progress',
      '--virt',
      '--image',
      'tiny-linux',
      '--system',
      'web01',
    ]);
    for (const c of fake.calls) expect(c.argv.join(' ')).not.toMatch(/s3cr3t|hunter2/);
    expect(agentRuns[0]!.options?.secretEnv).toEqual([
      { name: 'IMGAGENT_TOKEN', value: 's3cr3t' },
      { name: 'IMGAGENT_SETS', value: '["db_password=hunter2"]' },
    ]);
    expect(fake.events).toContainEqual({ target: 'hv1', kind: 'line', line: 'imgagent: working' });
    expect(summaryExitCode(summary)).toBe(0);
  });

  it('runs the self-contained agent where Node is missing or too old, copied only once', async () => {
    const fake = fakeDeps({
      none: { node: { exitCode: 127, output: 'sh: 1: node: not found' } },
      old: {
        node: { exitCode: 0, output: 'v18.19.1' },
        sums: { [REMOTE_EXECUTABLE]: EXE_SHA },
      },
    });
    const summary = await provisionTargets(
      { ...base, targets: [target('none'), target('old')] },
      fake.deps,
    );
    expect(summary.ok).toBe(true);
    expect(summary.targets.map((t) => [t.target, t.agent, t.agentCopied, t.node])).toEqual([
      ['none', 'executable', true, undefined],
      ['old', 'executable', false, 'v18.19.1'],
    ]);
    expect(fake.copies).toEqual([`none:${REMOTE_EXECUTABLE}:${EXE_SHA}:3`]);
    expect(fake.reads).toEqual([base.agentExecutable.path]);
    const run = fake.calls.find((c) => c.host === 'none' && c.argv[0]!.endsWith('x64'));
    expect(run!.argv.slice(0, 3)).toEqual([`./${REMOTE_EXECUTABLE}`, '--server', base.server]);
  });

  it('says exactly what is missing where neither agent can run', async () => {
    const noNode = { node: { exitCode: 127, output: 'sh: 1: node: not found' } };
    const fake = fakeDeps({
      arm: { ...noNode, platform: 'Linux aarch64' },
      musl: { ...noNode, libc: 'unknown' },
      oldlibc: { node: { exitCode: 0, output: 'v20.18.3' }, libc: 'glibc 2.17' },
    });
    const summary = await provisionTargets(
      { ...base, targets: [target('arm'), target('musl'), target('oldlibc')] },
      fake.deps,
    );
    expect(summary.targets.map((t) => [t.error?.code, t.error?.message])).toEqual([
      [
        'HOST',
        'root@arm has no node command (in the PATH of a non-interactive SSH session), and the self-contained agent cannot run there: it is built for Linux x86_64 and root@arm is Linux aarch64',
      ],
      [
        'HOST',
        expect.stringMatching(/: it needs glibc >= 2\.28 and root@musl has another C library$/),
      ],
      [
        'HOST',
        'root@oldlibc has Node.js v20.18.3; the agent bundle needs Node.js >= 20.19, and the self-contained agent cannot run there: it needs glibc >= 2.28 and root@oldlibc has glibc 2.17',
      ],
    ]);
    expect(summary.targets[0]!.error!.hint).toMatch(/^install Node\.js >= 20\.19 on the target/);

    const missing = fakeDeps({ none: noNode });
    const without = await provisionTargets(
      {
        ...base,
        agentExecutable: {
          missing: '/dist/imgagent-linux-x64 is missing',
          hint: 'run npm run build',
        },
        targets: [target('none')],
      },
      missing.deps,
    );
    expect(without.targets[0]!.error).toMatchObject({
      code: 'HOST',
      message: expect.stringMatching(/cannot run there: \/dist\/imgagent-linux-x64 is missing$/),
      hint: expect.stringMatching(/^run npm run build; or install Node\.js/),
    });
    expect(fake.copies).toEqual([]);
    expect(summaryExitCode(summary)).toBe(6);
  });

  it('fails a target whose copy does not check out, and runs nothing there', async () => {
    const fake = fakeDeps({
      bad: {
        copy: {
          exitCode: 1,
          stdout: '',
          stderr: `sha256 ${'b'.repeat(64)} is not the expected ${SHA}`,
        },
      },
    });
    const summary = await provisionTargets({ ...base, targets: [target('bad')] }, fake.deps);
    expect(summary.targets[0]!.error).toMatchObject({
      code: 'FAILED',
      message: expect.stringMatching(
        /^copying the agent to root@bad:~\/\.cache\/imgctl\/imgagent\.mjs failed \(exit 1\): sha256 b+ is not the expected a+$/,
      ),
    });
    expect(fake.calls.map((c) => c.argv[3] ?? c.argv[0])).toEqual(['imgctl-probe', 'imgctl-copy']);
  });

  it("reports the agent's JSON error with its code and details; other targets carry on", async () => {
    const fake = fakeDeps({
      down: { connectError: new ImgctlError('FAILED', 'cannot connect: connection refused') },
      full: {
        agent: async () => ({
          exitCode: 6,
          stdout: JSON.stringify({
            error: { code: 'HOST', message: 'cannot run', hint: 'h', details: ['no space'] },
          }),
          stderr: '',
        }),
      },
      fine: {},
    });
    const summary = await provisionTargets(
      { ...base, targets: [target('down'), target('full'), target('fine')] },
      fake.deps,
    );
    expect(summary.targets.map((t) => t.status)).toEqual(['failed', 'failed', 'ok']);
    expect(summary.targets[1]!.error).toEqual({
      code: 'HOST',
      message: 'cannot run',
      hint: 'h',
      details: ['no space'],
    });
    expect(summaryExitCode(summary)).toBe(1);
  });

  it('escapes control characters in what a target sends before anyone prints it', async () => {
    const fake = fakeDeps({
      evil: {
        agent: async (options) => {
          options.onStderrLine?.('imgagent: \u001b[2Jcleared');
          return {
            exitCode: 1,
            stdout: JSON.stringify({
              error: { code: 'FAILED', message: 'bad\u001b[31m\nimgctl: all ok', hint: 'h\u0007' },
            }),
            stderr: '',
          };
        },
      },
    });
    const summary = await provisionTargets({ ...base, targets: [target('evil')] }, fake.deps);
    expect(fake.events).toContainEqual({
      target: 'evil',
      kind: 'line',
      line: 'imgagent: \\x1b[2Jcleared',
    });
    expect(summary.targets[0]!.error).toMatchObject({
      message: 'bad\\x1b[31m\\x0aimgctl: all ok',
      hint: 'h\\x07',
    });
  });

  it('keeps to --parallel; an abort starts no new target and cancels the running ones', async () => {
    const controller = new AbortController();
    const started: string[] = [];
    const hosts: Record<string, FakeHost> = {};
    for (const h of ['h1', 'h2', 'h3', 'h4', 'h5']) {
      hosts[h] = {
        agent: (options) =>
          new Promise<ExecResult>((resolve) => {
            started.push(h);
            if (started.length === 2) controller.abort();
            const stop = () => resolve({ exitCode: null, signal: 'TERM', stdout: '', stderr: '' });
            if (options.signal?.aborted) stop();
            else options.signal?.addEventListener('abort', stop);
          }),
      };
    }
    const fake = fakeDeps(hosts);
    const summary = await provisionTargets(
      {
        ...base,
        targets: Object.keys(hosts).map((h) => target(h)),
        parallel: 2,
        signal: controller.signal,
      },
      fake.deps,
    );
    expect(fake.maxRunning()).toBe(2);
    expect(summary.cancelled).toBe(true);
    expect(summary.targets.map((t) => t.status)).toEqual([
      'cancelled',
      'cancelled',
      'not-started',
      'not-started',
      'not-started',
    ]);
    expect(summaryExitCode(summary)).toBe(130);
  });

  it('rolls out: canaries first, then the rest, and no new target after a failure', async () => {
    const failing = async () => ({
      exitCode: 6,
      stdout: JSON.stringify({ error: { code: 'HOST', message: 'no kvm' } }),
      stderr: '',
    });
    const canaryFails = fakeDeps({ c1: { agent: failing }, h2: {}, h3: {} });
    const first = await provisionTargets(
      { ...base, targets: [target('c1'), target('h2'), target('h3')], canary: 1, parallel: 1 },
      canaryFails.deps,
    );
    expect(first.stoppedBy).toBe('c1');
    expect(first.targets.map((t) => [t.target, t.status])).toEqual([
      ['c1', 'failed'],
      ['h2', 'not-started'],
      ['h3', 'not-started'],
    ]);
    expect(first.targets[1]!.error?.message).toBe(
      'not started: the rollout stopped when c1 failed',
    );
    // the others were never connected to
    expect(new Set(canaryFails.calls.map((c) => c.host))).toEqual(new Set(['c1']));
    expect(summaryExitCode(first)).toBe(6);

    const laterFails = fakeDeps({ c1: {}, h2: { agent: failing }, h3: {}, h4: {} });
    const second = await provisionTargets(
      {
        ...base,
        targets: ['c1', 'h2', 'h3', 'h4'].map((h) => target(h)),
        canary: 1,
        parallel: 1,
      },
      laterFails.deps,
    );
    expect(second.targets.map((t) => t.status)).toEqual([
      'ok',
      'failed',
      'not-started',
      'not-started',
    ]);
    expect(new Set(laterFails.calls.map((c) => c.host))).toEqual(new Set(['c1', 'h2']));
  });
});
