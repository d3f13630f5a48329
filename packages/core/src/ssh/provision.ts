/**
 * `imgctl provision` (docs/provision.md): imgagent run on many targets over SSH. For each
 * target, at most `parallel` at a time: connect (host key checked), check Node.js, copy the
 * single-file agent unless the same bytes are already there, run it with `--json` and the
 * token on stdin, relay its progress lines, and collect its result. A failed target never
 * stops the others; an abort starts no new target and stops the running ones.
 *
 * The remote machine is reached through `ProvisionDeps.connect` (a RemoteShell), so unit tests
 * pass fakes and imgctl an ssh2 connection.
 */
import { EXIT, type ErrorCode, ImgctlError, isImgctlError } from '../util/errors.ts';
import { terminalSafe } from '../util/names.ts';
import { formatSshTarget, type RemoteShell, type SshTarget } from './ssh.ts';
import { mapLimit } from '../store/store.ts';

/** Where the agent lives on a target, relative to the SSH user's home directory. */
const REMOTE_AGENT_DIR = '.cache/imgctl';
export const REMOTE_AGENT = `${REMOTE_AGENT_DIR}/imgagent.mjs`;
/** The oldest Node.js the agent bundle runs on (package.json engines). */
const MIN_NODE = { major: 20, minor: 19 } as const;
const DEFAULT_PARALLEL = 10;

export interface ProvisionTarget {
  /** what the user wrote: an address, or a system name */
  label: string;
  ssh: SshTarget;
  /** the system a system-name target stands for: the agent gets `--system` for it */
  system?: string;
}

export interface ProvisionOptions {
  targets: ProvisionTarget[];
  /** the local single-file agent (dist/imgagent.mjs) */
  agentBundle: string;
  /** the server URL, as the targets reach it */
  server: string;
  /** bearer token; goes to the agent on stdin ($IMGAGENT_TOKEN), never on a command line */
  token?: string;
  /** NAME=VALUE parameters (--set); go to the agent on stdin ($IMGAGENT_SETS), as they may be secrets */
  sets?: string[];
  /** the action and its flags, e.g. ['--virt', '--image', 'web', '--dry-run'] */
  agentArgs: string[];
  parallel?: number;
  /** aborted: no new target starts, running agents get SIGTERM */
  signal?: AbortSignal;
}

export type ProvisionPhase = 'connecting' | 'checking node' | 'copying agent' | 'running agent';

export type ProvisionEvent =
  | { target: string; kind: 'phase'; phase: ProvisionPhase }
  | { target: string; kind: 'line'; line: string }
  | { target: string; kind: 'done'; result: TargetResult };

export interface ProvisionDeps {
  connect(target: SshTarget, signal: AbortSignal): Promise<RemoteShell>;
  /** lowercase hex sha256 of a local file */
  sha256File(path: string): Promise<string>;
  /** milliseconds, for durations */
  now(): number;
  onEvent?(event: ProvisionEvent): void;
}

export type TargetStatus = 'ok' | 'failed' | 'cancelled' | 'not-started';

export interface TargetResult {
  target: string;
  /** user@host[:port] */
  address: string;
  system?: string;
  status: TargetStatus;
  seconds: number;
  /** the target's `node --version` */
  node?: string;
  /** whether the agent was copied (false: the same bytes were already there) */
  agentCopied?: boolean;
  /** the agent's exit code */
  exitCode?: number;
  /** the agent's --json result */
  result?: unknown;
  error?: { code: string; message: string; hint?: string; details?: string[] };
}

export interface ProvisionSummary {
  ok: boolean;
  cancelled: boolean;
  targets: TargetResult[];
}

/** Runs the agent on every target; resolves when all are done (it never rejects per target). */
export async function provisionTargets(
  options: ProvisionOptions,
  deps: ProvisionDeps,
): Promise<ProvisionSummary> {
  const agentSha = await deps.sha256File(options.agentBundle);
  const signal = options.signal ?? new AbortController().signal;
  const results = await mapLimit(
    options.targets,
    options.parallel ?? DEFAULT_PARALLEL,
    async (target) => {
      const start = deps.now();
      const base = {
        target: target.label,
        address: formatSshTarget(target.ssh),
        ...(target.system ? { system: target.system } : {}),
      };
      let result: TargetResult;
      if (signal.aborted) {
        result = { ...base, status: 'not-started', seconds: 0 };
      } else {
        const partial: Partial<TargetResult> = {};
        try {
          await provisionOne(target, { ...options, agentSha, signal }, deps, partial);
          result = { ...base, ...partial, status: 'ok', seconds: 0 };
        } catch (error) {
          const cancelled = signal.aborted;
          result = {
            ...base,
            ...partial,
            status: cancelled ? 'cancelled' : 'failed',
            seconds: 0,
            error: cancelled ? { code: 'FAILED', message: 'cancelled' } : errorFields(error),
          };
        }
        result.seconds = Math.round(deps.now() - start) / 1000;
      }
      deps.onEvent?.({ target: target.label, kind: 'done', result });
      return result;
    },
  );
  return {
    ok: results.every((r) => r.status === 'ok'),
    cancelled: signal.aborted,
    targets: results,
  };
}

interface RunContext extends ProvisionOptions {
  agentSha: string;
  signal: AbortSignal;
}

async function provisionOne(
  target: ProvisionTarget,
  ctx: RunContext,
  deps: ProvisionDeps,
  /** filled in as the run goes, so a failure still reports what was learnt */
  partial: Partial<TargetResult>,
): Promise<void> {
  const phase = (p: ProvisionPhase) =>
    deps.onEvent?.({ target: target.label, kind: 'phase', phase: p });
  const where = formatSshTarget(target.ssh);
  phase('connecting');
  const shell = await deps.connect(target.ssh, ctx.signal);
  try {
    phase('checking node');
    const probe = await probeTarget(shell, where);
    partial.node = probe.node;
    throwIfAborted(ctx.signal);

    partial.agentCopied = probe.agentSha !== ctx.agentSha;
    if (partial.agentCopied) {
      phase('copying agent');
      const mkdir = await shell.exec(['mkdir', '-p', '-m', '700', REMOTE_AGENT_DIR]);
      if (mkdir.exitCode !== 0)
        throw new ImgctlError(
          'FAILED',
          `cannot make ~/${REMOTE_AGENT_DIR} on ${where}: ${mkdir.stderr.trim()}`,
        );
      await shell.upload(ctx.agentBundle, REMOTE_AGENT, 0o644);
    }
    throwIfAborted(ctx.signal);

    phase('running agent');
    const args = [...ctx.agentArgs];
    if (target.system !== undefined && !args.includes('--system'))
      args.push('--system', target.system);
    const argv = ['node', REMOTE_AGENT, '--server', ctx.server, '--json', '--progress', ...args];
    // The token and the --set values go on stdin into $IMGAGENT_TOKEN and $IMGAGENT_SETS (a
    // JSON array), which the agent reads: never on a command line, where `ps` shows them.
    const secretEnv: Array<{ name: string; value: string }> = [];
    if (ctx.token !== undefined) secretEnv.push({ name: 'IMGAGENT_TOKEN', value: ctx.token });
    if (ctx.sets !== undefined && ctx.sets.length > 0)
      secretEnv.push({ name: 'IMGAGENT_SETS', value: JSON.stringify(ctx.sets) });
    const run = await shell.exec(argv, {
      secretEnv,
      supervise: true,
      signal: ctx.signal,
      onStderrLine: (line) =>
        deps.onEvent?.({ target: target.label, kind: 'line', line: terminalSafe(line) }),
    });
    partial.exitCode = run.exitCode ?? undefined;
    throwIfAborted(ctx.signal);
    const output = parseAgentOutput(run.stdout);
    if (run.exitCode === 0 && output !== undefined && !isAgentError(output)) {
      partial.result = output;
      return;
    }
    if (isAgentError(output)) {
      const e = output.error;
      throw new ImgctlError(agentCode(e.code), terminalSafe(e.message), {
        hint: e.hint ? terminalSafe(e.hint) : undefined,
        details: Array.isArray(e.details)
          ? e.details.map((d) => terminalSafe(String(d)))
          : undefined,
      });
    }
    const tail = terminalSafe(run.stderr.trim().split('\n').slice(-3).join(' | '));
    throw new ImgctlError(
      'FAILED',
      run.exitCode === 0
        ? `the agent on ${where} printed no JSON result`
        : `the agent on ${where} ${run.signal ? `was killed (${run.signal})` : `exited with ${run.exitCode ?? 'no status'}`}${tail ? `: ${tail}` : ''}`,
    );
  } finally {
    shell.close();
  }
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new ImgctlError('FAILED', 'cancelled');
}

/**
 * One remote command (each one costs a login shell): `node --version`, then the sha256 of the
 * agent copy already there. The script is constant; the path is its quoted argument.
 */
const PROBE_SCRIPT =
  'node --version 2>&1; echo "node-exit=$?"; sha256sum -- "$1" 2>/dev/null || true';

/** Node.js on the target, checked against MIN_NODE (saying exactly what is missing), and the agent's hash. */
async function probeTarget(
  shell: RemoteShell,
  where: string,
): Promise<{ node: string; agentSha?: string }> {
  const need = `Node.js >= ${MIN_NODE.major}.${MIN_NODE.minor}`;
  const hint = `install ${need} on the target so that 'ssh ${where} node --version' works (the agent runs with the PATH of a non-interactive SSH session)`;
  const run = await shell.exec(['/bin/sh', '-c', PROBE_SCRIPT, 'imgctl-probe', REMOTE_AGENT]);
  const lines = run.stdout.split('\n');
  const marker = lines.findIndex((l) => /^node-exit=\d+$/.test(l));
  if (run.exitCode !== 0 || marker < 0)
    throw new ImgctlError(
      'FAILED',
      `probing ${where} failed (exit ${run.exitCode ?? '?'}): ${terminalSafe(run.stderr.trim().slice(0, 200))}`,
    );
  const nodeExit = Number(lines[marker]!.slice('node-exit='.length));
  const version = terminalSafe(lines.slice(0, marker).join('\n').trim());
  const agentSha = /^([0-9a-f]{64})\s/.exec(lines[marker + 1] ?? '')?.[1];
  if (nodeExit === 127)
    throw new ImgctlError(
      'HOST',
      `${where} has no node command (in the PATH of a non-interactive SSH session); imgagent needs ${need}`,
      { hint },
    );
  const m = /^v(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (nodeExit !== 0 || !m)
    throw new ImgctlError(
      'HOST',
      `'node --version' on ${where} failed (exit ${nodeExit}): ${version.slice(0, 200)}; imgagent needs ${need}`,
      { hint },
    );
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major < MIN_NODE.major || (major === MIN_NODE.major && minor < MIN_NODE.minor))
    throw new ImgctlError('HOST', `${where} has Node.js ${version}; imgagent needs ${need}`, {
      hint,
    });
  return { node: version, ...(agentSha ? { agentSha } : {}) };
}

interface AgentError {
  error: { code: string; message: string; hint?: string | null; details?: unknown };
}

function parseAgentOutput(stdout: string): unknown {
  const text = stdout.trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function isAgentError(value: unknown): value is AgentError {
  const e = (value as AgentError | undefined)?.error;
  return typeof e === 'object' && e !== null && typeof e.message === 'string';
}

/** The agent's error code as one of ours (design.md §4); anything else is FAILED. */
function agentCode(code: string): ErrorCode {
  return code in EXIT && code !== 'OK' ? (code as ErrorCode) : 'FAILED';
}

function errorFields(error: unknown): NonNullable<TargetResult['error']> {
  if (isImgctlError(error))
    return {
      code: error.code,
      message: error.message,
      ...(error.hint ? { hint: error.hint } : {}),
      ...(error.details.length > 0 ? { details: error.details } : {}),
    };
  return { code: 'FAILED', message: error instanceof Error ? error.message : String(error) };
}

/**
 * The exit code of a whole run: 0 when every target succeeded; 130 when it was interrupted;
 * the failed targets' code when they all share one (a single target's code passes through);
 * else 1.
 */
export function summaryExitCode(summary: ProvisionSummary): number {
  if (summary.ok) return 0;
  if (summary.cancelled) return 130;
  const codes = new Set(
    summary.targets.filter((t) => t.status === 'failed').map((t) => t.error?.code ?? 'FAILED'),
  );
  return codes.size === 1 ? EXIT[agentCode([...codes][0]!)] : EXIT.FAILED;
}
