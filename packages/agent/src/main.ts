import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import type { ProcessRunner } from '@imgctl/core/agent/steps';
import { DEFAULT_CACHE_DIR } from '@imgctl/core/agent/blob-cache';
import { type Client, createClient } from '@imgctl/core/client/client';
import { EXIT, ImgctlError } from '@imgctl/core/util/errors';
import { systemProbe } from '@imgctl/core/agent/host-check';
import { isValidName } from '@imgctl/core/util/names';
import { redactPlan } from '@imgctl/core/plan/plan';
import { formatSize, parseSize } from '@imgctl/core/util/sizes';
import {
  type BootAction,
  replaceSelf,
  type ReplaceSelfResult,
} from '@imgctl/core/agent/replace-self';
import {
  DEFAULT_CONNECT,
  DEFAULT_LOG_DIR,
  DEFAULT_VIRT_PATH,
  provisionVirt,
  type VirtResult,
} from '@imgctl/core/agent/virt';
import { Command, CommanderError, Option } from 'commander';
import { execa } from 'execa';
import { describeError, renderTable } from '@imgctl/core/util/output';

export interface AgentIo {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
  /** default process.env */
  env?: Record<string, string | undefined>;
  /** default process.cwd() */
  cwd?: string;
  /** aborted when the run is interrupted: --virt and --replace-self stop and clean up */
  signal?: AbortSignal;
}

const VERSION = '0.1.0';

interface Flags {
  server?: string;
  list?: string;
  display?: boolean;
  virt?: boolean;
  replaceSelf?: boolean;
  image?: string;
  record?: string;
  system?: string;
  virtName?: string;
  virtPath: string;
  virtType: 'kvm' | 'qemu' | 'auto';
  connect: string;
  virtBridge?: string;
  nogfx?: boolean;
  start: boolean;
  autostart?: boolean;
  set: string[];
  dryRun?: boolean;
  printXml?: boolean;
  token?: string;
  tokenFile?: string;
  trust?: string;
  cacheDir: string;
  cacheLimit?: string;
  logDir: string;
  json?: boolean;
  force?: boolean;
  keepOnFailure?: boolean;
  targetDisk?: string;
  dataDisk: string[];
  reboot?: boolean;
  kexec?: boolean;
  progress?: boolean;
}

const EXAMPLES = `
Examples:
  imgagent --server http://imgsrv:8460 --list images
  imgagent --server http://imgsrv:8460 --display --image tiny-linux
  imgagent --server http://imgsrv:8460 --virt --system tiny01 --virt-bridge br0
  imgagent --server http://imgsrv:8460 --virt --image tiny-linux --virt-name tiny02 \\
           --virt-type qemu --nogfx --token-file /etc/imgctl/token --trust /etc/imgctl/server.pub
  imgagent --server http://imgsrv:8460 --replace-self --system tiny01 --target-disk /dev/sdb --dry-run

Exit codes: 0 ok, 1 failed, 2 usage, 3 validation, 4 not found, 5 conflict (the VM exists),
6 this host cannot run the image (or the target disk is too small), 7 integrity (checksum or
signature). See docs/agent.md.
`;

/**
 * imgagent's entry point (koan style: one action flag — --list, --display, --virt — plus
 * options). Returns the exit code; only bin.ts exits.
 */
export async function main(argv: string[], io: AgentIo): Promise<number> {
  const env = io.env ?? process.env;
  const cwd = io.cwd ?? process.cwd();
  let json = argv.includes('--json');
  let result = 0;
  const program = new Command('imgagent')
    .description(
      'Runs on a target: asks an imgctl server for an image and its record, checks this host can ' +
        'run it, pulls and verifies the disks, then creates a configured VM through libvirt ' +
        '(--virt) or writes the image over a disk of this machine (--replace-self).',
    )
    .version(VERSION, '-V, --version')
    .option('--server <url>', 'the imgctl server (default $IMGAGENT_SERVER)')
    .option('--list <what>', 'list the images or systems the server has: images|systems')
    .option('--display', 'show an image (and its record) or, with --system, the resolved plan')
    .option('--virt', 'create a VM through libvirt from the image')
    .option('--replace-self', 'write the image over a disk of this machine and configure it')
    .option('--image <name>', 'the image')
    .option('--record <name>', 'the record of the image (default: its default record)')
    .option('--system <name>', 'the system: a name, MAC address or hostname')
    .option(
      '--target-disk <dev|file>',
      "--replace-self: the disk written over (default: the system's)",
    )
    .option(
      '--data-disk <id=dev>',
      "--replace-self: write the image's disk ID onto DEV (repeatable); others are skipped",
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--reboot', '--replace-self: reboot into the written disk when done')
    .option('--no-reboot', '--replace-self: do not reboot (the default)')
    .option('--kexec', "--replace-self: boot the written disk's kernel with kexec when done")
    .option('--virt-name <name>', 'the VM name (default: the system, else the image)')
    .option('--virt-path <dir>', 'where the VM disks and seed go', DEFAULT_VIRT_PATH)
    .addOption(
      new Option('--virt-type <type>', 'domain type; auto: kvm when it works, else qemu')
        .choices(['kvm', 'qemu', 'auto'])
        .default('auto'),
    )
    .option('--connect <uri>', 'the libvirt connection', DEFAULT_CONNECT)
    .option('--virt-bridge <bridge>', 'put every nic on this host bridge')
    .option('--nogfx', 'no graphical console (serial only)')
    .option('--no-start', 'define the VM but do not start it')
    .option('--autostart', 'start the VM when the host boots')
    .option(
      '--set <name=value>',
      'set a parameter for this VM (repeatable)',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--dry-run', 'check the host and show the plan, disks and domain XML; change nothing')
    .option('--print-xml', 'print the domain XML only; change nothing')
    .option('--token <token>', 'bearer token for the server (prefer --token-file)')
    .option('--token-file <file>', 'file holding the bearer token')
    .option('--trust <key.pub>', 'the server signing public key: plans must be signed by it')
    .option(
      '--cache-dir <dir>',
      'the blob cache, shared by all VMs of this host',
      DEFAULT_CACHE_DIR,
    )
    .option('--cache-limit <size>', 'evict unused blobs beyond this size (e.g. 20GiB)')
    .option(
      '--log-dir <dir>',
      'provisioning logs go to DIR/<image>/<image>_<vm>.log',
      DEFAULT_LOG_DIR,
    )
    .option('--json', 'results as JSON on stdout; errors as {"error":{…}}')
    .option('--force', 'replace an existing VM of the same name (its disks are recreated)')
    .option('--keep-on-failure', 'leave what a failed run created, for debugging')
    .option(
      '--progress',
      'progress lines on stderr also with --json (imgctl provision relays them)',
    )
    .addHelpText('after', EXAMPLES)
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride()
    .action(async (flags: Flags) => {
      json = Boolean(flags.json);
      result = await run(flags, io, env, cwd);
    });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return result;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version' ||
        error.code === 'commander.help'
        ? 0
        : EXIT.USAGE;
    }
    return reportError(io, json, error);
  }
}

async function run(
  flags: Flags,
  io: AgentIo,
  env: Record<string, string | undefined>,
  cwd: string,
): Promise<number> {
  const actions = (['list', 'display', 'virt', 'replaceSelf'] as const).filter(
    (a) => flags[a] !== undefined && flags[a] !== false,
  );
  if (actions.length !== 1) {
    throw new ImgctlError(
      'USAGE',
      actions.length === 0
        ? 'nothing to do: give one of --list, --display, --virt, --replace-self'
        : `give only one of --list, --display, --virt, --replace-self (got ${actions.map((a) => `--${kebab(a)}`).join(', ')})`,
      { hint: 'imgagent --help' },
    );
  }
  for (const [flag, value] of [
    ['--image', flags.image],
    ['--record', flags.record],
    ['--virt-name', flags.virtName],
  ] as const) {
    if (value !== undefined && !isValidName(value))
      throw new ImgctlError('USAGE', `${flag}: invalid name '${value.slice(0, 80)}'`, {
        hint: 'names are [a-z0-9][a-z0-9._-]{0,62}',
      });
  }
  flags.set = [...setsFromEnv(env.IMGAGENT_SETS), ...flags.set];
  const client = await makeClient(flags, env, cwd);
  const out = (data: unknown, text: string) =>
    io.stdout.write(
      flags.json ? `${JSON.stringify(data, null, 2)}\n` : `${text.replace(/\n?$/, '\n')}`,
    );
  const log = (line: string) => {
    if (!flags.json || flags.progress) io.stderr.write(`imgagent: ${line}\n`);
  };

  if (flags.list !== undefined) {
    if (flags.list === 'images') {
      const images = await client.listImages();
      out(
        images,
        renderTable(
          ['image', 'revision', 'records', 'label'],
          images.map((i) => [
            i.name,
            String(i.revision ?? '-'),
            i.records.join(','),
            i.label ?? '',
          ]),
        ) || 'no images',
      );
    } else if (flags.list === 'systems') {
      const systems = await client.listSystems();
      out(
        systems,
        renderTable(
          ['system', 'hostname', 'image', 'record', 'macs'],
          systems.map((s) => [
            s.name,
            s.hostname ?? '-',
            s.image ?? '-',
            s.record ?? '-',
            s.macs.join(','),
          ]),
        ) || 'no systems',
      );
    } else {
      throw new ImgctlError('USAGE', `--list takes images or systems, not '${flags.list}'`);
    }
    return 0;
  }

  const runner = processRunner();
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(cwd, p));
  const agentDeps = {
    runner,
    now: () => Date.now(),
    randomHex: (bytes: number) => randomBytes(bytes).toString('hex'),
    log,
    signal: io.signal,
    tmpDir: tmpdir(),
    scriptEnv: {
      PATH: env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: env.HOME ?? '/root',
      LANG: env.LANG ?? 'C',
    },
  };

  if (flags.display) {
    if (flags.system !== undefined || flags.set.length > 0 || flags.virtName !== undefined) {
      const { plan } = await client.getPlan(planQuery(flags));
      const shown = redactPlan(plan);
      out(shown, JSON.stringify(shown, null, 2));
      return 0;
    }
    if (flags.image === undefined)
      throw new ImgctlError('USAGE', '--display needs --image or --system');
    const details = await client.getImage(flags.image);
    const record = flags.record ? await client.getRecord(flags.image, flags.record) : undefined;
    const image = details.image;
    const lines = [
      `image:    ${image.name}@${image.revision}${image.label ? `  ${image.label}` : ''}`,
      ...(image.description ? [`          ${image.description}`] : []),
      `records:  ${details.records.join(', ')}`,
      `systems:  ${details.systems.join(', ') || '-'}`,
      `devices:  ${image.devices.vcpus} vCPU, ${image.devices.memory}, graphics ${image.devices.graphics ?? 'none'}`,
      'disks:',
      ...image.disks.map(
        (d) =>
          `  ${d.id.padEnd(10)} ${d.use.padEnd(8)} ${d.format.padEnd(6)} ${String(d.size).padEnd(8)} ${d.sha256 ? `sha256:${d.sha256.slice(0, 12)}` : '(no content)'}`,
      ),
    ];
    if (record)
      lines.push(`record ${record.name}:`, JSON.stringify(record.provision ?? {}, null, 2));
    out(record ? { ...details, record } : details, lines.join('\n'));
    return 0;
  }

  if (flags.replaceSelf) {
    const replaced = await replaceSelf(
      {
        ...planQuery(flags),
        targetDisk: flags.targetDisk === undefined ? undefined : abs(flags.targetDisk),
        dataDisks: dataDiskFlags(flags.dataDisk, abs),
        cacheDir: abs(flags.cacheDir),
        logDir: abs(flags.logDir),
        boot: bootFlag(flags),
        dryRun: flags.dryRun,
        force: flags.force,
      },
      { ...agentDeps, client },
    );
    // --json prints one document: on a refused dry run, the error (which names the content).
    if (replaced.refused && flags.json) throw replaced.refused;
    out(replaced, describeReplaced(replaced));
    if (replaced.refused) throw replaced.refused;
    return 0;
  }

  // --virt
  if (flags.image === undefined && flags.system === undefined)
    throw new ImgctlError('USAGE', '--virt needs --image or --system');
  const virt = await provisionVirt(
    {
      ...planQuery(flags),
      virtPath: abs(flags.virtPath),
      cacheDir: abs(flags.cacheDir),
      cacheLimit:
        flags.cacheLimit === undefined ? undefined : sizeFlag('--cache-limit', flags.cacheLimit),
      logDir: abs(flags.logDir),
      connect: flags.connect,
      virtType: flags.virtType,
      bridge: flags.virtBridge,
      nogfx: flags.nogfx,
      noStart: !flags.start,
      autostart: flags.autostart,
      dryRun: flags.dryRun,
      printXml: flags.printXml,
      force: flags.force,
      keepOnFailure: flags.keepOnFailure,
    },
    { ...agentDeps, client, probe: systemProbe((file, args) => runner.run(file, args)) },
  );
  if (flags.printXml && !flags.json) {
    io.stdout.write(virt.xml);
    return 0;
  }
  out(virt, describe(virt));
  return 0;
}

function dataDiskFlags(values: string[], abs: (p: string) => string): Record<string, string> {
  const disks: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    const id = value.slice(0, eq);
    if (eq <= 0 || eq === value.length - 1 || !isValidName(id))
      throw new ImgctlError('USAGE', `--data-disk: expected ID=DEV, got '${value.slice(0, 200)}'`, {
        hint: 'e.g. --data-disk data=/dev/sdc',
      });
    if (disks[id] !== undefined) throw new ImgctlError('USAGE', `--data-disk ${id} given twice`);
    disks[id] = abs(value.slice(eq + 1));
  }
  return disks;
}

function bootFlag(flags: Flags): BootAction {
  if (flags.kexec && flags.reboot)
    throw new ImgctlError('USAGE', 'give only one of --reboot, --kexec, --no-reboot');
  if (flags.kexec) return 'kexec';
  return flags.reboot ? 'reboot' : 'none';
}

function describeReplaced(r: ReplaceSelfResult): string {
  const lines = [
    `${r.target}: ${r.image} (record ${r.record}${r.system ? `, system ${r.system}` : ''}) ${r.dryRun ? `would be ${r.refused ? 'refused' : 'written'} (dry run: nothing was changed)` : 'written and verified'}`,
    `  hostname     ${r.hostname}`,
    `  instance-id  ${r.dryRun ? '(new on every run)' : r.instanceId}`,
  ];
  for (const d of r.disks) {
    if (d.skipped) {
      lines.push(`  disk ${d.id.padEnd(7)} skipped: ${d.skipped}`);
      continue;
    }
    const how = d.method === 'stream' ? 'streamed raw' : `${d.format}, converted to raw`;
    lines.push(
      `  disk ${d.id.padEnd(7)} ${d.target} (${formatSize(d.targetSize ?? 0)}): sha256:${d.sha256?.slice(0, 12)} ${formatSize(d.size)}, ${how}${d.skippedZeros ? `, ${formatSize(d.skippedZeros)} of zeros skipped` : ''}`,
      `               on it ${r.dryRun ? 'now' : 'before'}: ${d.before?.length ? d.before.join('; ') : 'nothing recognisable'}`,
    );
  }
  lines.push(
    r.configPartition
      ? `  config       partition ${r.configPartition.number} of the ${r.configPartition.table} table: vfat 'cidata', ${formatSize(r.configPartition.size)}, the NoCloud seed`
      : `  config       a vfat 'cidata' partition after the image's, holding the NoCloud seed`,
  );
  if (!r.dryRun) lines.push(`  log          ${r.logFile}`);
  lines.push(`  next boot    ${r.boot.message}`);
  return lines.join('\n');
}

/** $IMGAGENT_SETS: a JSON array of NAME=VALUE, as imgctl provision sends --set (on stdin). */
export function setsFromEnv(value: string | undefined): string[] {
  if (value === undefined || value === '') return [];
  let sets: unknown;
  try {
    sets = JSON.parse(value);
  } catch {
    sets = undefined;
  }
  if (!Array.isArray(sets) || !sets.every((s) => typeof s === 'string'))
    throw new ImgctlError('USAGE', 'IMGAGENT_SETS must be a JSON array of NAME=VALUE strings');
  return sets as string[];
}

function planQuery(flags: Flags) {
  return {
    image: flags.image,
    record: flags.record,
    system: flags.system,
    vmName: flags.virtName,
    sets: flags.set,
  };
}

function describe(v: VirtResult): string {
  const state = v.dryRun
    ? 'would be defined (dry run: nothing was changed)'
    : `defined${v.started ? ' and started' : ''}${v.autostart ? ', autostart on' : ''}`;
  const lines = [
    `VM ${v.vm}: ${v.image} (record ${v.record}${v.system ? `, system ${v.system}` : ''}) ${state}`,
    `  hostname     ${v.hostname}`,
    `  instance-id  ${v.instanceId}`,
    `  domain type  ${v.virtType}`,
    ...v.disks.map(
      (d) =>
        `  disk ${d.id.padEnd(7)} ${d.path} (${d.target}, ${d.format} ${formatSize(d.size)}${d.use === 'system' ? ', overlay on the cached base' : d.use === 'data' ? ', copy' : ', empty'})`,
    ),
    `  seed         ${v.seed}`,
    `  serial log   ${v.serialLog}`,
    `  log          ${v.logFile}`,
  ];
  if (v.dryRun) lines.push('', v.xml.trimEnd());
  return lines.join('\n');
}

async function makeClient(
  flags: Flags,
  env: Record<string, string | undefined>,
  cwd: string,
): Promise<Client> {
  const server = flags.server ?? env.IMGAGENT_SERVER;
  if (!server)
    throw new ImgctlError('USAGE', 'no server: give --server URL (or set IMGAGENT_SERVER)');
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new ImgctlError('USAGE', `--server: not a URL: '${server.slice(0, 200)}'`, {
      hint: 'e.g. --server http://imgsrv:8460',
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ImgctlError('USAGE', `--server: only http:// and https:// URLs are supported`);
  if (flags.token !== undefined && flags.tokenFile !== undefined)
    throw new ImgctlError('USAGE', 'give --token or --token-file, not both');
  let token = flags.token ?? env.IMGAGENT_TOKEN;
  if (flags.tokenFile !== undefined) {
    const file = resolve(cwd, flags.tokenFile);
    try {
      token = (await readFile(file, 'utf8')).trim();
    } catch (error) {
      throw new ImgctlError(
        'USAGE',
        `--token-file: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? error}`,
      );
    }
    if (token === '') throw new ImgctlError('USAGE', `--token-file: ${file} is empty`);
  }
  let trustKey: string | undefined;
  if (flags.trust !== undefined) {
    const file = resolve(cwd, flags.trust);
    try {
      trustKey = await readFile(file, 'utf8');
    } catch (error) {
      throw new ImgctlError(
        'USAGE',
        `--trust: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? error}`,
      );
    }
  }
  return createClient({ baseUrl: server, token, trustKey, retries: 2 });
}

function sizeFlag(flag: string, value: string): number {
  try {
    return parseSize(value);
  } catch {
    throw new ImgctlError('USAGE', `${flag}: not a size: '${value}'`, { hint: 'e.g. 20GiB' });
  }
}

/**
 * Runs tools with execa (argument arrays; a failure rejects with stdout, stderr and exitCode on
 * the error). One given a signal (a script, a conversion) runs in a process group of
 * its own, which the abort terminates whole: what a script started stops with it.
 */
function processRunner(): ProcessRunner {
  return {
    async run(file, args, options = {}) {
      const { signal } = options;
      const child = execa(file, args, {
        input: options.input,
        env: options.env,
        extendEnv: options.env === undefined,
        cwd: options.cwd,
        stdin: options.input === undefined ? 'ignore' : undefined,
        detached: signal !== undefined,
      });
      const stop = () => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
        } catch {
          // the group is gone already
        }
      };
      if (signal?.aborted) stop();
      signal?.addEventListener('abort', stop, { once: true });
      try {
        const result = await child;
        return { stdout: String(result.stdout), stderr: String(result.stderr) };
      } finally {
        signal?.removeEventListener('abort', stop);
      }
    },
  };
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The one place that turns an error into output and an exit code. */
function reportError(io: AgentIo, json: boolean, error: unknown): number {
  const report = describeError('imgagent', json, error, {
    debug: Boolean((io.env ?? process.env).IMGCTL_DEBUG),
  });
  if (report.stdout) io.stdout.write(report.stdout);
  if (report.stderr) io.stderr.write(report.stderr);
  return report.exitCode;
}
