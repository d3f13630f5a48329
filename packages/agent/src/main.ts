import { isAbsolute, resolve } from 'node:path';
import { DEFAULT_CACHE_DIR } from '@imgctl/core/agent/blob-cache';
import { DEFAULT_CONNECT, DEFAULT_LOG_DIR, DEFAULT_VIRT_PATH } from '@imgctl/core/agent/virt';
import { EXIT, ImgctlError, isImgctlError } from '@imgctl/core/util/errors';
import { kebab } from '@imgctl/core/util/names';
import { errorDocument, reportError } from '@imgctl/core/util/output';
import { VERSION } from '@imgctl/core/util/version';
import { Command, CommanderError, Option } from 'commander';
import type { Action, ActionContext } from './actions/action.ts';
import { makeClient } from './client.ts';
import { checkNames, type Flags, setsFromEnv } from './flags.ts';
import type { AgentIo } from './io.ts';

type ActionName = 'list' | 'display' | 'virt' | 'replaceSelf' | 'update' | 'rollback';

/** One module per action flag, loaded only when it runs. */
const ACTIONS: Record<ActionName, () => Promise<Action>> = {
  list: async () => (await import('./actions/list.ts')).run,
  display: async () => (await import('./actions/display.ts')).run,
  virt: async () => (await import('./actions/virt.ts')).run,
  replaceSelf: async () => (await import('./actions/replace-self.ts')).run,
  update: async () => (await import('./actions/update.ts')).run,
  rollback: async () => (await import('./actions/update.ts')).rollback,
};

/** Whether the action flag is given: --update goes with --replace-self, else it updates a VM. */
function isGiven(flags: Flags, action: ActionName): boolean {
  if (action === 'update') return Boolean(flags.update) && !flags.replaceSelf;
  if (action === 'virt') return Boolean(flags.virt) && !flags.update;
  return flags[action] !== undefined && flags[action] !== false;
}

const EXAMPLES = `
Examples:
  imgagent --server http://imgsrv:8460 --list images
  imgagent --server http://imgsrv:8460 --display --image tiny-linux
  imgagent --server http://imgsrv:8460 --virt --system tiny01 --virt-bridge br0
  imgagent --server http://imgsrv:8460 --virt --image tiny-linux --virt-name tiny02 \\
           --virt-type qemu --nogfx --token-file /etc/imgctl/token --trust /etc/imgctl/server.pub
  imgagent --server http://imgsrv:8460 --replace-self --system tiny01 --target-disk /dev/sdb --dry-run
  imgagent --server http://imgsrv:8460 --replace-self --system web07 --via-ramdisk --reboot --token-file /etc/imgctl/token
  imgagent --server http://imgsrv:8460 --update --virt-name tiny01      # to what its channel says
  imgagent --server http://imgsrv:8460 --update --virt-name tiny01 --image tiny-linux@4 --dry-run
  imgagent --server http://imgsrv:8460 --rollback --virt-name tiny01

Exit codes: 0 ok, 1 failed, 2 usage, 3 validation, 4 not found, 5 conflict (the VM exists),
6 this host cannot run the image (or the target disk is too small), 7 integrity (checksum or
signature). A VM update that failed its health check and rolled back exits 1. See docs/agent.md.
`;

/**
 * imgagent's entry point (koan style: one action flag — --list, --display, --virt,
 * --replace-self — plus options). Returns the exit code; only bin.ts exits.
 */
export async function main(argv: string[], io: AgentIo): Promise<number> {
  const env = io.env ?? process.env;
  const cwd = io.cwd ?? process.cwd();
  let json = argv.includes('--json');
  let result = 0;
  const program = agentProgram(io, async (flags) => {
    json = Boolean(flags.json);
    result = await run(flags, io, env, cwd);
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return result;
  } catch (error) {
    const errorIo = { stdout: io.stdout, stderr: io.stderr, env };
    if (!(error instanceof CommanderError)) return reportError('imgagent', errorIo, json, error);
    if (
      error.code === 'commander.helpDisplayed' ||
      error.code === 'commander.version' ||
      error.code === 'commander.help'
    )
      return 0;
    // commander has said what is wrong on stderr; --json gets it as the error document too
    if (!json) return EXIT.USAGE;
    const usage = new ImgctlError('USAGE', error.message.replace(/^error: /, ''), {
      hint: 'imgagent --help',
    });
    return reportError('imgagent', errorIo, true, usage);
  }
}

/**
 * imgagent's commander program: every option, description and example of its --help (the man
 * page and the bash completion are generated from it too). `action` runs once the flags are
 * parsed.
 */
export function agentProgram(
  io: Pick<AgentIo, 'stdout' | 'stderr'>,
  action: (flags: Flags) => Promise<void>,
): Command {
  return new Command('imgagent')
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
    .option(
      '--update',
      'update the VM --virt-name to the release its image reference (or --image) points at: new system disks, data disks kept, health-checked, rolled back if it fails; with --replace-self: rewrite the system disk(s) and config partition only',
    )
    .option(
      '--via-ramdisk',
      '--replace-self: the target is a disk this machine runs from: load the provisioning ramdisk (kexec, else a one-time GRUB entry), which writes it once nothing runs from it; --reboot switches at once',
    )
    .option('--rollback', 'put the VM --virt-name back on the generation its last update replaced')
    .option(
      '--health-timeout <duration>',
      "--update/--rollback: how long to wait for the image's health marker (default: the image's, else 300s)",
    )
    .option(
      '--shutdown-timeout <duration>',
      '--update/--rollback: how long a running VM gets to shut down before it is destroyed',
      '120s',
    )
    .option(
      '--follow <ref>',
      '--virt/--update: the image reference the VM follows from now on (default: --image); imgctl provision passes the channel it pinned',
    )
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
      '--blob-mirror <oci://host/prefix>',
      "pull disks from this OCI registry first (repeatable; before the plan's blob_mirrors, the server last); the image's disks are in PREFIX/<image>, or put {image} in the path",
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option(
      '--registry-auth <file>',
      'registry credentials as container tools write them (default: $REGISTRY_AUTH_FILE, ~/.docker/config.json)',
    )
    .option('--registry-ca <file>', "PEM CA bundle for the registries' certificates")
    .option('--insecure-http', 'talk to the registries over plain http://')
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
    .action(action);
}

/** Checks what can be checked without the server, then runs the one action given. */
async function run(
  flags: Flags,
  io: AgentIo,
  env: Record<string, string | undefined>,
  cwd: string,
): Promise<number> {
  const names = Object.keys(ACTIONS) as ActionName[];
  const given = names.filter((a) => isGiven(flags, a));
  const asFlags = (list: ActionName[]) => list.map((a) => `--${kebab(a)}`).join(', ');
  if (given.length !== 1) {
    throw new ImgctlError(
      'USAGE',
      given.length === 0
        ? `nothing to do: give one of ${asFlags(names)}`
        : `give only one of ${asFlags(names)} (got ${asFlags(given)})`,
      { hint: 'imgagent --help' },
    );
  }
  checkNames(flags);
  flags.set = [...setsFromEnv(env.IMGAGENT_SETS), ...flags.set];
  const ctx: ActionContext = {
    flags,
    client: await makeClient(flags, env, cwd),
    io,
    env,
    abs: (p) => (isAbsolute(p) ? p : resolve(cwd, p)),
    log(line) {
      if (!flags.json || flags.progress) io.stderr.write(`imgagent: ${line}\n`);
    },
  };
  const action = await ACTIONS[given[0]!]();
  const { data, text, failure } = await action(ctx);
  if (flags.json && isImgctlError(failure)) {
    // one document: what happened, with the error that decides the exit code
    const error = errorDocument(failure);
    io.stdout.write(`${JSON.stringify({ ...(data as object), error }, null, 2)}\n`);
    return failure.exitCode;
  }
  io.stdout.write(flags.json ? `${JSON.stringify(data, null, 2)}\n` : text.replace(/\n?$/, '\n'));
  if (failure) throw failure;
  return 0;
}
