import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImgctlError, isImgctlError } from '@imgctl/core/util/errors';
import { isValidName, kebab, printable, terminalSafe } from '@imgctl/core/util/names';
import { renderTable } from '@imgctl/core/util/output';
import {
  type ProvisionEvent,
  type ProvisionSummary,
  type ProvisionTarget,
  provisionTargets,
  readAgentFile,
  summaryExitCode,
  type TargetResult,
} from '@imgctl/core/ssh/provision';
import { connectSsh, loadIdentity, openKnownHosts, type RemoteShell } from '@imgctl/core/ssh/ssh';
import {
  pinImageRef,
  readTargetsFile,
  resolveServerUrl,
  resolveTargets,
} from '@imgctl/core/ssh/targets';
import { readTokenFile } from '@imgctl/core/client/token';
import { parseImageRef } from '@imgctl/core/store/releases';
import type { Context, Handler } from '../command.ts';
import type { Io } from '../io.ts';
import { integerOption } from './options.ts';
import { type AgentOptions, agentArguments } from '../agent-options.ts';

export interface ProvisionOptions extends AgentOptions {
  targets?: string;
  /** default 10 */
  parallel?: string;
  maxUnavailable?: string;
  canary?: string;
  server?: string;
  tokenFile?: string;
  identity?: string[];
  knownHosts?: string;
  acceptNew?: boolean;
  /** seconds; the spec's default is 15 */
  connectTimeout?: string;
}

export const run: Handler<ProvisionOptions> = async (args, options, ctx) => {
  const env = ctx.io.env;
  const actions = ['--virt', '--replace-self'].filter((a) => agentArguments(options).includes(a));
  if (actions.length !== 1)
    throw new ImgctlError('USAGE', 'give one of --virt or --replace-self', {
      hint: 'imgctl provision --help',
    });
  if (options.image !== undefined) parseImageRef(options.image);
  for (const flag of ['record', 'system', 'virtName'] as const) {
    const value = options[flag];
    if (value !== undefined && !isValidName(value))
      throw new ImgctlError('USAGE', `--${kebab(flag)}: invalid name '${printable(value)}'`, {
        hint: 'names are [a-z0-9][a-z0-9._-]{0,62}',
      });
  }
  if (options.maxUnavailable !== undefined && options.parallel !== undefined)
    throw new ImgctlError('USAGE', 'give --max-unavailable or --parallel, not both', {
      hint: '--max-unavailable N runs N at a time and stops at the first failure',
    });
  const parallel = integerOption(
    options.maxUnavailable ?? options.parallel ?? '10',
    options.maxUnavailable !== undefined ? '--max-unavailable' : '--parallel',
  )!;
  const canary = integerOption(options.canary, '--canary');
  const timeoutS = integerOption(options.connectTimeout ?? '15', '--connect-timeout')!;

  const specs = [...args];
  if (options.targets !== undefined)
    specs.push(...(await readTargetsFile(resolve(ctx.io.cwd, options.targets))));
  if (specs.length === 0)
    throw new ImgctlError('USAGE', 'no targets: give [user@]host[:port] or system names', {
      hint: 'imgctl provision root@hv1 --virt --image web (or --targets FILE)',
    });
  const storeDir = await ctx.storeDir().catch((error: unknown) => {
    if (isImgctlError(error) && error.code === 'NOT_FOUND') return undefined;
    throw error;
  });
  const targets = await resolveTargets(specs, storeDir);
  // an update of a VM named by --virt-name plans what that VM follows
  const updatesNamedVm = options.virt && options.update && options.virtName !== undefined;
  if (
    options.image === undefined &&
    options.system === undefined &&
    !updatesNamedVm &&
    targets.some((t) => t.system === undefined)
  )
    throw new ImgctlError('USAGE', 'say what to provision: --image NAME or --system NAME', {
      hint: 'a target that is a system name brings its own --system; --virt --update --virt-name VM updates VM to what it follows',
    });
  const server = await resolveServerUrl({
    given: options.server,
    fromEnv: env.IMGCTL_SERVER,
    storeDir,
  });
  const token =
    options.tokenFile === undefined
      ? undefined
      : await readTokenFile(resolve(ctx.io.cwd, options.tokenFile), '--token-file');
  const image =
    options.image === undefined
      ? undefined
      : await pinImageRef(options.image, { storeDir, server, token });
  if (image !== options.image && !ctx.json)
    ctx.io.stderr.write(`imgctl: ${options.image} is ${image}: every target gets that release\n`);
  // a VM made or updated from the pinned release goes on following the channel
  const follow = image !== options.image && options.virt ? ['--follow', options.image!] : [];
  const agentArgs = [...agentArguments({ ...options, image }), ...follow];
  const agentBundle = await locateAgentBundle(ctx.io);
  const agentExecutable = await locateAgentExecutable(ctx.io, agentBundle);

  const home = env.HOME ?? '/root';
  const knownHostsFile = options.knownHosts
    ? resolve(ctx.io.cwd, options.knownHosts)
    : join(home, '.ssh/known_hosts');
  const knownHosts = await openKnownHosts(
    options.knownHosts ? [knownHostsFile] : [knownHostsFile, '/etc/ssh/ssh_known_hosts'],
    knownHostsFile,
  );
  const identities = await loadIdentities(options.identity ?? [], home, ctx.io.cwd);
  const agentSocket = env.SSH_AUTH_SOCK || undefined;

  // Ctrl-C (or SIGTERM): no new target, running agents get SIGTERM; twice: connections dropped.
  const controller = new AbortController();
  const open = new Set<RemoteShell>();
  const onSignal = () => {
    if (controller.signal.aborted) {
      for (const shell of open) shell.close();
      return;
    }
    ctx.io.stderr.write(
      'imgctl: interrupted: no new target starts; stopping the running agents (again to drop the connections)\n',
    );
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const reporter = await makeReporter(ctx, targets);
  let summary: ProvisionSummary;
  try {
    summary = await provisionTargets(
      {
        targets,
        agentBundle,
        agentExecutable,
        server,
        token,
        sets: options.set ?? [],
        agentArgs,
        parallel,
        ...(canary === undefined ? {} : { canary }),
        stopOnFailure: options.maxUnavailable !== undefined || canary !== undefined,
        signal: controller.signal,
      },
      {
        async connect(ssh, signal) {
          const shell = await connectSsh({
            target: ssh,
            knownHosts,
            acceptNew: Boolean(options.acceptNew),
            identities,
            agentSocket,
            connectTimeoutMs: timeoutS * 1000,
            signal,
          });
          open.add(shell);
          return {
            exec: (argv, o) => shell.exec(argv, o),
            close() {
              open.delete(shell);
              shell.close();
            },
          };
        },
        readAgent: readAgentFile,
        now: () => Date.now(),
        onEvent: reporter.onEvent,
      },
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await reporter.finish();
  }
  return { data: summary, text: summaryTable(summary), exitCode: summaryExitCode(summary) };
};

/** --identity files (errors are fatal); else the usual ~/.ssh keys that load, silently. */
async function loadIdentities(given: string[], home: string, cwd: string): Promise<Buffer[]> {
  if (given.length > 0) return Promise.all(given.map((f) => loadIdentity(resolve(cwd, f))));
  const keys: Buffer[] = [];
  for (const name of ['id_ed25519', 'id_ecdsa', 'id_rsa']) {
    const file = join(home, '.ssh', name);
    if (!existsSync(file)) continue;
    keys.push(
      ...(await loadIdentity(file).then(
        (k) => [k],
        () => [],
      )),
    );
  }
  return keys;
}

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * The single-file agent copied to the targets, as `npm run build` makes it: $IMGCTL_AGENT_BUNDLE;
 * else imgagent.mjs beside the running imgctl bundle; else, from a source checkout,
 * dist/imgagent.mjs — refused when it is missing or older than the sources, as a target would
 * run other code than the checkout's. `here` is the directory of the running imgctl code.
 */
export async function locateAgentBundle(io: Pick<Io, 'env' | 'cwd'>, here = HERE): Promise<string> {
  const fromEnv = io.env.IMGCTL_AGENT_BUNDLE;
  if (fromEnv) {
    const file = resolve(io.cwd, fromEnv);
    if (!existsSync(file))
      throw new ImgctlError('NOT_FOUND', `IMGCTL_AGENT_BUNDLE: no such file ${file}`);
    return file;
  }
  if (basename(here) === 'dist' || !here.endsWith(join('packages', 'cli', 'src', 'commands'))) {
    const beside = join(here, 'imgagent.mjs');
    if (existsSync(beside)) return beside;
    throw new ImgctlError('NOT_FOUND', `the agent bundle ${beside} is missing`, {
      hint: 'install imgagent.mjs beside imgctl.mjs (npm run build writes both), or set IMGCTL_AGENT_BUNDLE',
    });
  }
  const root = resolve(here, '../../../..');
  const built = join(root, 'dist/imgagent.mjs');
  const hint = 'run npm run build (it writes dist/imgagent.mjs), or set IMGCTL_AGENT_BUNDLE';
  if (!existsSync(built))
    throw new ImgctlError('NOT_FOUND', `the agent bundle ${built} is missing`, { hint });
  if ((await stat(built)).mtimeMs < (await newestSource(root)))
    throw new ImgctlError(
      'NOT_FOUND',
      `the agent bundle ${built} is older than the sources of packages/core and packages/agent`,
      { hint },
    );
  return built;
}

const EXECUTABLE = 'imgagent-linux-x64';

/**
 * The self-contained agent for targets without a suitable Node: $IMGCTL_AGENT_EXECUTABLE (an
 * error when it does not exist); else imgagent-linux-x64 beside the agent bundle — from a
 * checkout, not when it is older than the sources. Missing, it is only an error for a target
 * that needs it, so the reason goes along.
 */
export async function locateAgentExecutable(
  io: Pick<Io, 'env' | 'cwd'>,
  bundle: string,
  here = HERE,
): Promise<{ path: string } | { missing: string; hint: string }> {
  const fromEnv = io.env.IMGCTL_AGENT_EXECUTABLE;
  if (fromEnv) {
    const file = resolve(io.cwd, fromEnv);
    if (!existsSync(file))
      throw new ImgctlError('NOT_FOUND', `IMGCTL_AGENT_EXECUTABLE: no such file ${file}`);
    return { path: file };
  }
  const file = join(dirname(bundle), EXECUTABLE);
  const hint = `run npm run build (it writes dist/${EXECUTABLE}), or set IMGCTL_AGENT_EXECUTABLE`;
  if (!existsSync(file)) return { missing: `${file} is missing`, hint };
  const checkout = resolve(here, '../../../..');
  if (
    here.endsWith(join('packages', 'cli', 'src', 'commands')) &&
    file === join(checkout, 'dist', EXECUTABLE) &&
    (await stat(file)).mtimeMs < (await newestSource(checkout))
  )
    return { missing: `${file} is older than the sources`, hint };
  return { path: file };
}

/** The newest modification time of the sources the agent bundle is built from (tests aside). */
async function newestSource(root: string): Promise<number> {
  let newest = 0;
  for (const pkg of ['core', 'agent']) {
    const dir = join(root, 'packages', pkg, 'src');
    for (const rel of await readdir(dir, { recursive: true })) {
      if (!String(rel).endsWith('.ts') || String(rel).endsWith('.test.ts')) continue;
      newest = Math.max(newest, (await stat(join(dir, String(rel)))).mtimeMs);
    }
  }
  return newest;
}

interface Reporter {
  onEvent(event: ProvisionEvent): void;
  finish(): Promise<void>;
}

/**
 * Progress on stderr: a listr2 line per target on a terminal; otherwise plain lines prefixed
 * by the target (the agent's own lines relayed as they come). Nothing with --json.
 */
async function makeReporter(ctx: Context, targets: ProvisionTarget[]): Promise<Reporter> {
  if (ctx.json) return { onEvent() {}, finish: async () => {} };
  if (!ctx.io.isTTY) {
    return {
      onEvent(event) {
        if (event.kind === 'line') ctx.log(`${event.target}: ${event.line}`);
        else if (event.kind === 'phase') ctx.log(`${event.target}: ${event.phase}`);
        else {
          ctx.log(`${event.target}: ${describeDone(event.result)}`);
          const error = event.result.error;
          for (const d of error?.details ?? []) ctx.log(`${event.target}:   ${d}`);
          if (error?.hint) ctx.log(`${event.target}: hint: ${error.hint}`);
        }
      },
      finish: async () => {},
    };
  }
  const { Listr, ListrLogger, ProcessOutput } = await import('listr2');
  type Task = { title: string | undefined; output: string | undefined };
  const waiting = new Map<
    string,
    { task?: Task; done?: TargetResult; settle?: (r: TargetResult) => void }
  >(targets.map((t) => [t.label, {}]));
  const settleTask = (label: string, result: TargetResult) => {
    const entry = waiting.get(label)!;
    entry.done = result;
    entry.settle?.(result);
  };
  const list = new Listr(
    targets.map((t) => ({
      title: `${t.label}: waiting`,
      task: (_: unknown, task: Task) =>
        new Promise<void>((resolvePromise, reject) => {
          const entry = waiting.get(t.label)!;
          entry.task = task;
          const settle = (r: TargetResult) => {
            task.title = `${t.label}: ${describeDone(r)}`;
            if (r.status === 'ok') resolvePromise();
            else reject(new Error(r.error?.message ?? r.status));
          };
          if (entry.done) settle(entry.done);
          else entry.settle = settle;
        }),
    })),
    {
      concurrent: true,
      exitOnError: false,
      registerSignalListeners: false,
      rendererOptions: {
        collapseErrors: false,
        logger: new ListrLogger({
          processOutput: new ProcessOutput(process.stderr, process.stderr),
        }),
      },
    },
  );
  const running = list.run().catch(() => undefined);
  return {
    onEvent(event) {
      const task = waiting.get(event.target)?.task;
      if (event.kind === 'done') settleTask(event.target, event.result);
      else if (task && event.kind === 'phase') task.title = `${event.target}: ${event.phase}`;
      else if (task && event.kind === 'line') task.output = event.line;
    },
    finish: async () => {
      await running;
    },
  };
}

function describeDone(r: TargetResult): string {
  if (r.status === 'ok') return `ok in ${r.seconds}s${detail(r) ? ` (${detail(r)})` : ''}`;
  if (r.status === 'not-started') return 'not started';
  if (r.status === 'cancelled') return 'cancelled';
  return `failed: ${r.error?.message ?? 'unknown error'}`;
}

/** What an update did to a target's VM: `imgagent --update`'s result. */
interface UpdateResultView {
  vm?: string;
  dryRun?: boolean;
  action?: 'updated' | 'up-to-date' | 'checked' | 'rolled-back';
  to?: { generation?: number; release?: string; image?: string };
}

function detail(r: TargetResult): string {
  const result = r.result as UpdateResultView | undefined;
  if (r.status !== 'ok' && result?.action === 'rolled-back' && result.vm)
    return `vm ${terminalSafe(String(result.vm))} ${describeUpdate(result)}: ${r.error?.message ?? ''}`;
  if (r.status !== 'ok') return r.error?.message ?? '';
  const parts = [];
  if (result?.vm)
    parts.push(
      `vm ${terminalSafe(String(result.vm))}${result.action ? ` ${describeUpdate(result)}` : ''}${result.dryRun ? ' (dry run)' : ''}`,
    );
  const agent = r.agent === 'executable' ? 'self-contained agent' : 'agent';
  parts.push(`${agent} ${r.agentCopied ? 'copied' : 'up to date'}`);
  return parts.join(', ');
}

function describeUpdate(result: UpdateResultView): string {
  const to = `${terminalSafe(String(result.to?.release ?? result.to?.image ?? '?'))} (generation ${result.to?.generation ?? '?'})`;
  if (result.action === 'up-to-date') return `up to date on ${to}`;
  if (result.action === 'rolled-back') return `rolled back to ${to}`;
  return `updated to ${to}`;
}

/** How many targets' VMs were updated, left as they were, rolled back, not started. */
function updateCounts(summary: ProvisionSummary): string {
  const actions = summary.targets.map((t) => (t.result as UpdateResultView | undefined)?.action);
  if (!actions.some((a) => a !== undefined)) return '';
  const count = (what: string, n: number) => (n > 0 ? [`${what} ${n}`] : []);
  const parts = [
    ...count('updated', actions.filter((a) => a === 'updated' || a === 'checked').length),
    ...count('up to date', actions.filter((a) => a === 'up-to-date').length),
    ...count('rolled back', actions.filter((a) => a === 'rolled-back').length),
    ...count('not started', summary.targets.filter((t) => t.status === 'not-started').length),
  ];
  return `: ${parts.join(', ')}`;
}

function summaryTable(summary: ProvisionSummary): string {
  const table = renderTable(
    ['target', 'address', 'status', 'seconds', 'detail'],
    summary.targets.map((t) => [t.target, t.address, t.status, String(t.seconds), detail(t)]),
  );
  const failed = summary.targets.filter((t) => t.status !== 'ok').length;
  const tail = summary.ok
    ? `all ${summary.targets.length} target(s) provisioned`
    : `${failed} of ${summary.targets.length} target(s) not provisioned${summary.cancelled ? ' (interrupted)' : ''}${summary.stoppedBy ? ` (the rollout stopped when ${summary.stoppedBy} failed)` : ''}`;
  return `${table}\n${tail}${updateCounts(summary)}`;
}
