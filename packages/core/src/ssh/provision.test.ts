import { describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import {
  type ProvisionDeps,
  type ProvisionEvent,
  type ProvisionTarget,
  provisionTargets,
  REMOTE_AGENT,
  summaryExitCode,
} from './provision.ts';
import type { ExecOptions, ExecResult, RemoteShell } from './ssh.ts';

const SHA = 'a'.repeat(64);

interface FakeHost {
  /** what `node --version` prints, and its exit code */
  node?: { exitCode: number; output: string };
  remoteSha?: string;
  agent?: (options: ExecOptions) => Promise<ExecResult>;
  connectError?: ImgctlError;
}

/** A fake target: answers node --version, sha256sum, mkdir and the agent; records every call. */
function fakeDeps(hosts: Record<string, FakeHost>) {
  const calls: Array<{ host: string; argv: readonly string[]; options?: ExecOptions }> = [];
  const uploads: string[] = [];
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
            const sum = host.remoteSha ? `${host.remoteSha}  ${REMOTE_AGENT}\n` : '';
            return {
              exitCode: 0,
              stdout: `${node.output}\nnode-exit=${node.exitCode}\n${sum}`,
              stderr: '',
            };
          }
          if (argv[0] === 'mkdir') return { exitCode: 0, stdout: '', stderr: '' };
          options?.onStderrLine?.('imgagent: working');
          return host.agent
            ? host.agent(options ?? {})
            : { exitCode: 0, stdout: '{"vm":"tiny01"}\n', stderr: '' };
        },
        async upload(_local, remote) {
          uploads.push(`${target.host}:${remote}`);
        },
        close() {
          running--;
        },
      };
      return shell;
    },
    sha256File: async () => SHA,
    now: () => 0,
    onEvent: (e) => events.push(e),
  };
  return { deps, calls, uploads, events, maxRunning: () => maxRunning };
}

const target = (host: string, system?: string): ProvisionTarget => ({
  label: host,
  ssh: { user: 'root', host, port: 22 },
  ...(system ? { system } : {}),
});

const base = {
  agentBundle: '/dist/imgagent.mjs',
  server: 'http://imgsrv:8460',
  agentArgs: ['--virt', '--image', 'tiny-linux'],
};

describe('provisionTargets', () => {
  it('copies the agent only where it differs, runs it with --json, the token and sets only on stdin', async () => {
    const fake = fakeDeps({ hv1: {}, hv2: { remoteSha: SHA } });
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
    expect(summary.targets.map((t) => [t.target, t.status, t.agentCopied])).toEqual([
      ['hv1', 'ok', true],
      ['hv2', 'ok', false],
    ]);
    expect(summary.targets[0]!.result).toEqual({ vm: 'tiny01' });
    expect(fake.uploads).toEqual([`hv1:${REMOTE_AGENT}`]);
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

  it('says exactly what is missing: no node, or one too old', async () => {
    const fake = fakeDeps({
      none: { node: { exitCode: 127, output: 'sh: 1: node: not found' } },
      old: { node: { exitCode: 0, output: 'v20.18.3' } },
    });
    const summary = await provisionTargets(
      { ...base, targets: [target('none'), target('old')] },
      fake.deps,
    );
    expect(summary.targets[0]!.error).toMatchObject({
      code: 'HOST',
      message: expect.stringMatching(/^root@none has no node command .* needs Node\.js >= 20\.19$/),
    });
    expect(summary.targets[1]!.error).toMatchObject({
      code: 'HOST',
      message: 'root@old has Node.js v20.18.3; imgagent needs Node.js >= 20.19',
    });
    expect(fake.uploads).toEqual([]);
    expect(summaryExitCode(summary)).toBe(6);
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
});
