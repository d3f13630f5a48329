/**
 * The steps `imgagent --virt` (virt.ts) and `--replace-self` (replace-self.ts) share: running
 * tools, the provisioning scripts with their config files and log, password hashes for the
 * seed, events to the server, download progress lines, and turning failures into ImgctlErrors.
 */
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ensureDir } from '../store/store.ts';
import type { Client, DownloadProgress } from '../client/client.ts';
import { type ErrorCode, ImgctlError, isImgctlError } from '../util/errors.ts';
import type { Phase } from '../server/events.ts';
import type { ProcessRunner, RunOptions } from '../util/process.ts';
import { humanSize } from '../util/sizes.ts';
import { terminalSafe } from '../util/names.ts';
import type { PlanDisk, PlanDoc } from '../store/types.ts';

/** What every agent flow needs from the outside world. */
export interface StepDeps {
  runner: ProcessRunner;
  client: Pick<Client, 'baseUrl' | 'getFile' | 'getImage' | 'postEvent'>;
  /** milliseconds since the epoch */
  now(): number;
  /** a progress or status line for the user (stderr) */
  log(line: string): void;
  /** the environment provisioning scripts start from (PATH, HOME, LANG) */
  scriptEnv: Record<string, string>;
  /**
   * aborted when the run is interrupted (SIGINT, SIGTERM): downloads stop at once, other steps
   * at the next phase or script, and the flow cleans up as after any failure
   */
  signal?: AbortSignal;
}

const PROGRESS_EVERY_MS = 2000;

/** Throws VALIDATION unless the disk's content is a blob the server holds. */
export function assertPullable(plan: PlanDoc, disk: PlanDisk): void {
  if (!disk.sha256)
    throw new ImgctlError('VALIDATION', `disk '${disk.id}' of ${plan.image.name} has no content`, {
      hint: `build or add it on the server (imgctl build ${plan.image.name}, imgctl disk add)`,
    });
  if (!disk.blob)
    throw new ImgctlError('VALIDATION', `disk '${disk.id}' is stored at a URL, not in the store`, {
      hint: 'the agent pulls blobs from the server only; import the disk into the store',
    });
}

/** Says so when the plan is of a deprecated release: it still runs, as asked. */
export function warnIfDeprecated(plan: PlanDoc, log: StepDeps['log']): void {
  const deprecated = plan.image.deprecated;
  if (!deprecated) return;
  // what the server sends is printed escaped
  const via = plan.image.reference ? ` (${terminalSafe(plan.image.reference)})` : '';
  const reason = deprecated.reason ? `: ${terminalSafe(deprecated.reason)}` : '';
  log(
    `warning: ${terminalSafe(String(plan.image.release))}${via} is deprecated since ${terminalSafe(deprecated.at)}${reason}`,
  );
}

/**
 * crypt(3) hashes for the seed, from secret parameters named `root_password` (root) or
 * `login_password_<user>`; other secrets (a database password…) never enter the seed.
 */
export async function passwordHashes(
  plan: PlanDoc,
  runner: ProcessRunner,
): Promise<Record<string, string>> {
  const hashes: Record<string, string> = {};
  for (const name of plan.secrets) {
    const user =
      name === 'root_password' ? 'root' : /^login_password_([a-z_][a-z0-9_-]*)$/.exec(name)?.[1];
    const value = plan.parameters[name];
    if (user === undefined || typeof value !== 'string' || value === '' || value === '<redacted>')
      continue;
    const { stdout } = await run(
      runner,
      'openssl',
      ['passwd', '-6', '-stdin'],
      `hashing the password of ${user}`,
      { input: `${value}\n` },
    );
    hashes[user] = stdout.trim();
  }
  return hashes;
}

/** The plan's parameters without secrets: what the seed may carry in plain text. */
export function publicParameters(plan: PlanDoc): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(plan.parameters).filter(([name]) => !plan.secrets.includes(name)),
  );
}

/** NAME=VALUE lines as common/functions.sh `config_get` reads them: values single-quoted. */
export function renderConfig(values: Record<string, unknown>): string {
  const lines: string[] = [];
  for (const [name, value] of Object.entries(values)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) continue;
    const text =
      value === null || value === undefined
        ? ''
        : typeof value === 'string'
          ? value
          : JSON.stringify(value);
    lines.push(`${name}='${text.replace(/\n/g, ' ').replace(/'/g, `'"'"'`)}'`);
  }
  return `${lines.join('\n')}\n`;
}

export interface ProvisioningRun {
  /** the run's private scratch directory (mode 0700) */
  work: string;
  logFile: string;
  /** variables beyond the common ones: VIRT_PATH for --virt, TARGET_DISK for --replace-self */
  env: Record<string, string>;
}

/**
 * provision.sh and the custom script sets, fetched from the server into `work/store/` (a
 * mirror of the store's layout, so `. "$IMAGE_STORE/common/functions.sh"` works) and run with
 * sh on this host; their output goes to LOG_FILE.
 */
export async function runProvisioning(
  plan: PlanDoc,
  target: ProvisioningRun,
  deps: StepDeps,
): Promise<void> {
  const { client } = deps;
  const { work, logFile } = target;
  // a release's files are its frozen copies
  const image = plan.image.release ?? plan.image.name;
  const store = join(work, 'store');
  const fetchTo = async (path: string, optional: boolean): Promise<string | undefined> => {
    try {
      const text = await client.getFile(image, path);
      const file = join(store, ...path.split('/'));
      await mkdir(join(file, '..'), { recursive: true });
      await writeFile(file, text, { mode: 0o700 });
      return file;
    } catch (error) {
      if (optional && isImgctlError(error) && error.code === 'NOT_FOUND') return undefined;
      throw error;
    }
  };
  await fetchTo('common/functions.sh', true);
  await fetchTo('common/defs.sh', true);
  const scripts: Array<{ name: string; file: string }> = [];
  const script = plan.provision.script ?? 'provision.sh';
  const provisionFile = await fetchTo(script, plan.provision.script === undefined);
  if (provisionFile) scripts.push({ name: script, file: provisionFile });
  for (const set of plan.provision.custom_scripts) {
    const listing = JSON.parse(await client.getFile(image, `custom_scripts/${set}`)) as {
      files: Array<{ name: string }>;
    };
    for (const entry of listing.files) {
      const path = `custom_scripts/${set}/${entry.name}`;
      scripts.push({ name: path, file: (await fetchTo(path, false))! });
    }
  }
  if (scripts.length === 0) return;

  const vmConfig = join(work, 'vm.conf');
  const imageConfig = join(work, 'image.conf');
  const variables = { ...plan.variables, IMAGE_STORE: store, IMAGE_STORE_URL: client.baseUrl };
  await writeFile(vmConfig, renderConfig({ ...variables, ...plan.parameters }), { mode: 0o600 });
  const defaults = await imageDefaults(client, image);
  await writeFile(imageConfig, renderConfig(defaults), { mode: 0o600 });
  await ensureDir(dirname(logFile), 0o755);
  const env: Record<string, string> = {
    ...deps.scriptEnv,
    IMAGE_STORE: store,
    IMAGE_STORE_URL: client.baseUrl,
    IMAGE_NAME: image,
    VM_NAME: plan.vm_name,
    VM_CONFIG: vmConfig,
    IMAGE_CONFIG: imageConfig,
    LOG_FILE: logFile,
    ...target.env,
  };
  await appendFile(
    logFile,
    `${new Date(deps.now()).toISOString()} imgagent: provisioning ${plan.vm_name} from ${image}@${plan.image.revision}\n`,
  );
  for (const { name, file } of scripts) {
    deps.signal?.throwIfAborted();
    deps.log(`running ${name} (log: ${logFile})`);
    try {
      const out = await deps.runner.run('sh', [file], { env, cwd: work, signal: deps.signal });
      if (out.stdout || out.stderr) await appendFile(logFile, `${out.stdout}${out.stderr ?? ''}`);
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string; exitCode?: number };
      await appendFile(logFile, `${e.stdout ?? ''}${e.stderr ?? ''}`).catch(() => undefined);
      throw new ImgctlError(
        'FAILED',
        `${name} failed${e.exitCode === undefined ? '' : ` (exit ${e.exitCode})`}: ${lastLine(e.stderr)}`,
        { hint: `its output is in ${logFile}`, cause: error },
      );
    }
  }
}

async function imageDefaults(
  client: StepDeps['client'],
  image: string,
): Promise<Record<string, unknown>> {
  const details = await client.getImage(image);
  return Object.fromEntries(
    Object.entries(details.image.parameters ?? {})
      .filter(([, p]) => p.default !== undefined && !p.secret)
      .map(([name, p]) => [name, p.default]),
  );
}

/** Events are best effort: a server that refuses them (read-only) does not stop provisioning. */
export function eventSender(
  deps: Pick<StepDeps, 'client' | 'log' | 'signal'>,
  plan: Pick<PlanDoc, 'system' | 'record'> & { image: Pick<PlanDoc['image'], 'name' | 'release'> },
  vm: string,
  /** the run's `started` was sent already (by another sender of the same run) */
  resumed = false,
) {
  let disabled = false;
  let started = resumed;
  return {
    /** Reports reaching `phase`; an interrupted run stops here instead (all but 'failed'). */
    async send(phase: Phase, extra: { code?: ErrorCode; message?: string } = {}) {
      if (phase !== 'failed') deps.signal?.throwIfAborted();
      if (disabled || (phase === 'failed' && !started)) return;
      if (phase === 'started') started = true;
      try {
        await deps.client.postEvent({
          system: plan.system ?? vm,
          phase,
          image: plan.image.name,
          ...(plan.image.release ? { release: plan.image.release } : {}),
          record: plan.record,
          vm_name: vm,
          ...extra,
        });
      } catch (error) {
        disabled = true;
        deps.log(
          `warning: events are not reported to the server: ${(error as Error).message} (give a write token with --token-file)`,
        );
      }
    },
    /** Reports `failure` (the user-facing form of `error`, if any) and returns what to throw. */
    async failed(error: unknown, failure: ImgctlError | undefined): Promise<unknown> {
      await this.send('failed', {
        code: failure?.code ?? 'FAILED',
        message: (failure?.message ?? `internal error: ${String(error)}`).slice(0, 4096),
      });
      return failure ?? error;
    },
  };
}

/** A progress line every few seconds while a disk's blob arrives (`verb`: pulling, writing). */
export function progressLogger(
  deps: Pick<StepDeps, 'now' | 'log'>,
  disk: PlanDisk,
  verb = 'pulling',
): (p: DownloadProgress) => void {
  const start = deps.now();
  let last = start;
  let first = true;
  return ({ bytes, total }) => {
    const now = deps.now();
    if (first) {
      // The first call comes before any data: what the partial file already held.
      first = false;
      if (bytes > 0 && total !== undefined && bytes < total)
        deps.log(`resuming disk ${disk.id} at ${humanSize(bytes)}`);
      return;
    }
    const doneNow = total !== undefined && bytes >= total;
    if (!doneNow && now - last < PROGRESS_EVERY_MS) return;
    last = now;
    const rate = now > start ? ` ${humanSize((bytes / (now - start)) * 1000)}/s` : '';
    const pct = total ? ` ${Math.floor((bytes / total) * 100)}%` : '';
    deps.log(
      `${verb} disk ${disk.id} sha256:${short(disk.sha256!)}: ${humanSize(bytes)}${total ? `/${humanSize(total)}` : ''}${pct}${rate}`,
    );
  };
}

/** Runs a tool; its failure becomes ImgctlError FAILED saying `what` failed and why. */
export async function run(
  runner: ProcessRunner,
  file: string,
  args: string[],
  what: string,
  options?: RunOptions,
  spaceHint = 'free some space where the VM disks go (--virt-path), or choose another',
): Promise<{ stdout: string }> {
  try {
    return await runner.run(file, args, options);
  } catch (error) {
    const e = error as { stderr?: string; message?: string; code?: string };
    const text = lastLine(e.stderr) || e.message || String(error);
    const noSpace = /No space left on device|ENOSPC/i.test(`${e.stderr ?? ''} ${e.message ?? ''}`);
    throw new ImgctlError('FAILED', `${what}: ${noSpace ? 'no space left on device' : text}`, {
      cause: error,
      hint: noSpace ? spaceHint : undefined,
    });
  }
}

/** Reboots now: through systemd when it runs this machine (services stopped, disks synced), else `reboot`. */
export async function rebootNow(runner: ProcessRunner): Promise<void> {
  try {
    await runner.run('systemctl', ['reboot']);
  } catch {
    await run(runner, 'reboot', [], 'reboot');
  }
}

/** Boots the kernel loaded with `kexec -l`: through systemd when it can (an orderly shutdown), else `kexec -e`. */
export async function kexecNow(runner: ProcessRunner): Promise<void> {
  await run(runner, 'sync', [], 'sync');
  try {
    await runner.run('systemctl', ['kexec']);
  } catch {
    await run(runner, 'kexec', ['-e'], 'kexec -e');
  }
}

/**
 * The interruption (the abort reason) when the run was interrupted: what failed then (a tool
 * terminated, a download stopped) is its consequence, not the cause to report.
 */
export function interrupted(deps: Pick<StepDeps, 'signal'>): ImgctlError | undefined {
  const reason: unknown = deps.signal?.aborted ? deps.signal.reason : undefined;
  return isImgctlError(reason) ? reason : undefined;
}

/** The user-facing error for a failure; undefined for a bug (rethrown as it is). */
export function asImgctlError(
  error: unknown,
  spaceHint = 'free some space where the VM disks go (--virt-path), or choose another',
): ImgctlError | undefined {
  if (isImgctlError(error)) return error;
  const e = error as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC')
    return new ImgctlError('FAILED', `no space left on device: ${e.message}`, {
      cause: error,
      hint: spaceHint,
    });
  if (e?.code === 'EACCES' || e?.code === 'EPERM' || e?.code === 'EROFS' || e?.code === 'EIO')
    return new ImgctlError('FAILED', e.message, { cause: error });
  return undefined;
}

/** The last two non-empty lines of a tool's output: what it said about its failure. */
function lastLine(text: string | undefined): string {
  return (text ?? '')
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-2)
    .join(' ')
    .slice(0, 500);
}

/** The first 12 hex digits of a sha256, for messages. */
export function short(hex: string): string {
  return hex.slice(0, 12);
}
