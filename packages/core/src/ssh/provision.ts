/**
 * `imgctl provision` (docs/provision.md): imgagent run on many targets over SSH. For each
 * target, at most `parallel` at a time: connect (host key checked), probe Node.js and the
 * platform, choose the agent — the single-file bundle where a suitable Node is, else the
 * self-contained executable — copy it (gzip on the wire, sha256 checked on the target) unless
 * the same bytes are already there, run it with `--json` and the token on stdin, relay its
 * progress lines, and collect its result. A failed target never stops the others; an abort
 * starts no new target and stops the running ones.
 *
 * The remote machine is reached through `ProvisionDeps.connect` (a RemoteShell), so unit tests
 * pass fakes and imgctl an ssh2 connection.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { EXIT, type ErrorCode, ImgctlError, isImgctlError } from '../util/errors.ts';
import { terminalSafe } from '../util/names.ts';
import { formatSshTarget, type RemoteShell, type SshTarget } from './ssh.ts';
import { mapLimit } from '../store/store.ts';

/** Where the agent lives on a target, relative to the SSH user's home directory. */
const REMOTE_AGENT_DIR = '.cache/imgctl';
export const REMOTE_AGENT = `${REMOTE_AGENT_DIR}/imgagent.mjs`;
export const REMOTE_EXECUTABLE = `${REMOTE_AGENT_DIR}/imgagent-linux-x64`;
/** The oldest Node.js the agent bundle runs on (package.json engines). */
const MIN_NODE = { major: 20, minor: 19 } as const;
/** What the self-contained executable runs on: Node 20's official build needs glibc 2.28. */
const EXECUTABLE_PLATFORM = 'Linux x86_64';
const MIN_GLIBC = { major: 2, minor: 28 } as const;
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
  /** the local single-file agent (dist/imgagent.mjs), run by the target's Node */
  agentBundle: string;
  /**
   * The local self-contained agent (dist/imgagent-linux-x64), for targets without a suitable
   * Node; or why there is none, said when a target needs it.
   */
  agentExecutable: { path: string } | { missing: string; hint: string };
  /** the server URL, as the targets reach it */
  server: string;
  /** bearer token; goes to the agent on stdin ($IMGAGENT_TOKEN), never on a command line */
  token?: string;
  /** NAME=VALUE parameters (--set); go to the agent on stdin ($IMGAGENT_SETS), as they may be secrets */
  sets?: string[];
  /** the action and its flags, e.g. ['--virt', '--image', 'web', '--dry-run'] */
  agentArgs: string[];
  parallel?: number;
  /**
   * A rollout: these many targets first (the canaries), the rest only when they all succeed;
   * implies stopOnFailure
   */
  canary?: number;
  /** no new target starts once one has failed (the others are `not-started`, saying why) */
  stopOnFailure?: boolean;
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
  /** a local agent file as it is copied (readAgentFile); asked once per file and run */
  readAgent(path: string): Promise<AgentFile>;
  /** milliseconds, for durations */
  now(): number;
  onEvent?(event: ProvisionEvent): void;
}

export type AgentKind = 'node' | 'executable';

/** A local agent file ready to copy: its sha256 and its gzip-compressed bytes. */
export interface AgentFile {
  sha256: string;
  gzipped: Uint8Array;
}

/** Reads an agent file, hashes it and compresses it (zlib runs off the main thread). */
export async function readAgentFile(path: string): Promise<AgentFile> {
  const bytes = await readFile(path);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  return { sha256, gzipped: await promisify(gzip)(bytes, { level: 6 }) };
}

export type TargetStatus = 'ok' | 'failed' | 'cancelled' | 'not-started';

export interface TargetResult {
  target: string;
  /** user@host[:port] */
  address: string;
  system?: string;
  status: TargetStatus;
  seconds: number;
  /** the target's `node --version`, when it has a node command that answers */
  node?: string;
  /** which agent ran: the bundle on the target's Node, or the self-contained executable */
  agent?: AgentKind;
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
  /** a rollout stopped at a failure: the first failed target */
  stoppedBy?: string;
  targets: TargetResult[];
}

/** Runs the agent on every target; resolves when all are done (it never rejects per target). */
export async function provisionTargets(
  options: ProvisionOptions,
  deps: ProvisionDeps,
): Promise<ProvisionSummary> {
  const files = new Map<string, Promise<AgentFile>>();
  const readAgent = (path: string) => {
    if (!files.has(path)) files.set(path, deps.readAgent(path));
    return files.get(path)!;
  };
  const signal = options.signal ?? new AbortController().signal;
  const stopOnFailure = Boolean(options.stopOnFailure || options.canary);
  let stoppedBy: string | undefined;
  const runOne = async (target: ProvisionTarget): Promise<TargetResult> => {
    const start = deps.now();
    const base = {
      target: target.label,
      address: formatSshTarget(target.ssh),
      ...(target.system ? { system: target.system } : {}),
    };
    let result: TargetResult;
    if (signal.aborted) {
      result = { ...base, status: 'not-started', seconds: 0 };
    } else if (stoppedBy !== undefined) {
      const message = `not started: the rollout stopped when ${stoppedBy} failed`;
      result = { ...base, status: 'not-started', seconds: 0, error: { code: 'FAILED', message } };
    } else {
      const partial: Partial<TargetResult> = {};
      try {
        await provisionOne(target, { ...options, readAgent, signal }, deps, partial);
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
        if (!cancelled && stopOnFailure) stoppedBy ??= target.label;
      }
      result.seconds = Math.round(deps.now() - start) / 1000;
    }
    deps.onEvent?.({ target: target.label, kind: 'done', result });
    return result;
  };
  const parallel = options.parallel ?? DEFAULT_PARALLEL;
  const canaries = options.targets.slice(0, options.canary ?? 0);
  const results = [
    ...(await mapLimit(canaries, parallel, runOne)),
    ...(await mapLimit(options.targets.slice(canaries.length), parallel, runOne)),
  ];
  return {
    ok: results.every((r) => r.status === 'ok'),
    cancelled: signal.aborted,
    ...(stoppedBy === undefined ? {} : { stoppedBy }),
    targets: results,
  };
}

interface RunContext extends ProvisionOptions {
  readAgent(path: string): Promise<AgentFile>;
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
    if (probe.node !== undefined) partial.node = probe.node;
    const agent = chooseAgent(probe, ctx, where);
    partial.agent = agent.kind;
    const file = await ctx.readAgent(agent.local);
    throwIfAborted(ctx.signal);

    partial.agentCopied = probe.sums.get(agent.remote) !== file.sha256;
    if (partial.agentCopied) {
      phase('copying agent');
      await copyAgent(shell, file, agent.remote, where);
    }
    throwIfAborted(ctx.signal);

    phase('running agent');
    const args = [...ctx.agentArgs];
    if (target.system !== undefined && !args.includes('--system'))
      args.push('--system', target.system);
    const command = agent.kind === 'node' ? ['node', REMOTE_AGENT] : [`./${REMOTE_EXECUTABLE}`];
    const argv = [...command, '--server', ctx.server, '--json', '--progress', ...args];
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
      // a result beside the error (an update that rolled back) says what happened
      if (Object.keys(output).length > 1) partial.result = output;
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
 * One remote command (each one costs a login shell): `node --version`, the platform, the C
 * library, then the sha256 of the agent copies already there. The script is constant; the
 * paths are its quoted arguments.
 */
const PROBE_SCRIPT = [
  'node --version 2>&1; echo "node-exit=$?"',
  'uname -sm',
  'getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown',
  'sha256sum -- "$@" 2>/dev/null || true',
].join('\n');

interface Probe {
  /** `node --version`, when node ran */
  node?: string;
  /** why this Node cannot run the bundle; undefined when it can */
  nodeProblem?: string;
  /** `uname -sm`, e.g. "Linux x86_64" */
  platform: string;
  /** `getconf GNU_LIBC_VERSION`, e.g. "glibc 2.36"; "unknown" elsewhere (musl) */
  libc: string;
  /** sha256 of the agent copies on the target, by remote path */
  sums: Map<string, string>;
}

async function probeTarget(shell: RemoteShell, where: string): Promise<Probe> {
  const run = await shell.exec([
    '/bin/sh',
    '-c',
    PROBE_SCRIPT,
    'imgctl-probe',
    REMOTE_AGENT,
    REMOTE_EXECUTABLE,
  ]);
  const lines = run.stdout.split('\n');
  const marker = lines.findIndex((l) => /^node-exit=\d+$/.test(l));
  if (run.exitCode !== 0 || marker < 0 || lines.length < marker + 3)
    throw new ImgctlError(
      'FAILED',
      `probing ${where} failed (exit ${run.exitCode ?? '?'}): ${terminalSafe(run.stderr.trim().slice(0, 200))}`,
    );
  const nodeExit = Number(lines[marker]!.slice('node-exit='.length));
  const version = terminalSafe(lines.slice(0, marker).join('\n').trim());
  const sums = new Map<string, string>();
  for (const line of lines.slice(marker + 3)) {
    const m = /^([0-9a-f]{64}) [ *](.*)$/.exec(line);
    if (m) sums.set(m[2]!, m[1]!);
  }
  const need = `Node.js >= ${MIN_NODE.major}.${MIN_NODE.minor}`;
  const m = /^v(\d+)\.(\d+)\.(\d+)/.exec(version);
  let nodeProblem: string | undefined;
  if (nodeExit === 127)
    nodeProblem = `${where} has no node command (in the PATH of a non-interactive SSH session)`;
  else if (nodeExit !== 0 || !m)
    nodeProblem = `'node --version' on ${where} failed (exit ${nodeExit}): ${version.slice(0, 200)}`;
  else if (!atLeast(Number(m[1]), Number(m[2]), MIN_NODE))
    nodeProblem = `${where} has Node.js ${version}; the agent bundle needs ${need}`;
  return {
    ...(nodeExit === 0 && m ? { node: version } : {}),
    ...(nodeProblem ? { nodeProblem } : {}),
    platform: terminalSafe(lines[marker + 1]!.trim()),
    libc: terminalSafe(lines[marker + 2]!.trim()),
    sums,
  };
}

function atLeast(major: number, minor: number, min: { major: number; minor: number }): boolean {
  return major > min.major || (major === min.major && minor >= min.minor);
}

/**
 * The bundle where the target's Node can run it; else the self-contained executable where the
 * platform and C library can; else a HOST error saying what is missing for each.
 */
function chooseAgent(
  probe: Probe,
  ctx: RunContext,
  where: string,
): { kind: AgentKind; local: string; remote: string } {
  if (probe.nodeProblem === undefined)
    return { kind: 'node', local: ctx.agentBundle, remote: REMOTE_AGENT };
  const exe = ctx.agentExecutable;
  const glibc = /^glibc (\d+)\.(\d+)/.exec(probe.libc);
  let hint = `install Node.js >= ${MIN_NODE.major}.${MIN_NODE.minor} on the target so that 'ssh ${where} node --version' works (the agent runs with the PATH of a non-interactive SSH session)`;
  let why: string;
  if ('missing' in exe) {
    why = exe.missing;
    hint = `${exe.hint}; or ${hint}`;
  } else if (probe.platform !== EXECUTABLE_PLATFORM)
    why = `it is built for ${EXECUTABLE_PLATFORM} and ${where} is ${probe.platform}`;
  else if (!glibc || !atLeast(Number(glibc[1]), Number(glibc[2]), MIN_GLIBC))
    why = `it needs glibc >= ${MIN_GLIBC.major}.${MIN_GLIBC.minor} and ${where} has ${probe.libc === 'unknown' ? 'another C library' : probe.libc}`;
  else return { kind: 'executable', local: exe.path, remote: REMOTE_EXECUTABLE };
  throw new ImgctlError(
    'HOST',
    `${probe.nodeProblem}, and the self-contained agent cannot run there: ${why}`,
    { hint },
  );
}

/**
 * Writes the gzip stream on stdin to a temporary file beside `$1`, checks its sha256 against
 * `$2`, and renames it into place; anything else leaves no file behind. The script is constant.
 */
const COPY_SCRIPT = [
  'umask 077',
  'mkdir -p -- "${1%/*}" || exit 1',
  'tmp="$1.tmp.$$"',
  'trap \'rm -f -- "$tmp"\' EXIT',
  'gzip -dc >"$tmp" || exit 1',
  'sum=$(sha256sum <"$tmp") || exit 1',
  '[ "${sum%% *}" = "$2" ] || { echo "sha256 ${sum%% *} is not the expected $2" >&2; exit 1; }',
  'chmod 700 -- "$tmp" && mv -f -- "$tmp" "$1"',
].join('\n');

async function copyAgent(
  shell: RemoteShell,
  file: AgentFile,
  remote: string,
  where: string,
): Promise<void> {
  const run = await shell.exec(['/bin/sh', '-c', COPY_SCRIPT, 'imgctl-copy', remote, file.sha256], {
    stdin: file.gzipped,
  });
  if (run.exitCode !== 0)
    throw new ImgctlError(
      'FAILED',
      `copying the agent to ${where}:~/${remote} failed (exit ${run.exitCode ?? run.signal ?? '?'}): ${terminalSafe(run.stderr.trim().slice(0, 300))}`,
    );
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
