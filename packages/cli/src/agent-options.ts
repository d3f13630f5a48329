import type { OptionSpec } from './command.ts';

/** The options of AGENT_OPTIONS as commander gives them (see `Handler` in command.ts). */
export interface AgentOptions {
  image?: string;
  record?: string;
  system?: string;
  virt?: boolean;
  replaceSelf?: boolean;
  dryRun?: boolean;
  set?: string[];
  virtName?: string;
  virtPath?: string;
  virtType?: string;
  connect?: string;
  virtBridge?: string;
  nogfx?: boolean;
  /** false with --no-start */
  start?: boolean;
  autostart?: boolean;
  cacheDir?: string;
  cacheLimit?: string;
  logDir?: string;
  force?: boolean;
  keepOnFailure?: boolean;
  targetDisk?: string;
  /** true with --reboot, false with --no-reboot */
  reboot?: boolean;
  kexec?: boolean;
  update?: boolean;
  viaRamdisk?: boolean;
  healthTimeout?: string;
  shutdownTimeout?: string;
  blobMirror?: string[];
  registryAuth?: string;
  registryCa?: string;
  insecureHttp?: boolean;
  agentArg?: string[];
}

/**
 * imgagent options `imgctl provision` passes through unchanged: `key` is commander's name for
 * the option; `value` false for a flag, true for one with a value, 'repeat' for a repeatable
 * one; `negated` for `--no-X`, passed when the option is false.
 */
export const AGENT_OPTIONS: Array<
  OptionSpec & { key: keyof AgentOptions; value: boolean | 'repeat'; negated?: boolean }
> = [
  { flags: '--image <name>', description: 'the image', key: 'image', value: true },
  {
    flags: '-r, --record <record>',
    description: 'the record of the image',
    key: 'record',
    value: true,
  },
  {
    flags: '-s, --system <system>',
    description: 'the system (default: the system a target names)',
    key: 'system',
    value: true,
  },
  {
    flags: '--virt',
    description: 'create a VM through libvirt on each target',
    key: 'virt',
    value: false,
  },
  {
    flags: '--replace-self',
    description: 'write the image over a disk of each target',
    key: 'replaceSelf',
    value: false,
  },
  {
    flags: '--dry-run',
    description: 'the agents check the hosts and show what they would do; nothing changes',
    key: 'dryRun',
    value: false,
  },
  {
    flags: '--set <name=value>',
    description: 'set a parameter (repeatable; sent on stdin, not on the remote command line)',
    key: 'set',
    value: 'repeat',
    repeatable: true,
  },
  { flags: '--virt-name <name>', description: 'the VM name', key: 'virtName', value: true },
  {
    flags: '--virt-path <dir>',
    description: 'where the VM disks go',
    key: 'virtPath',
    value: true,
  },
  {
    flags: '--virt-type <type>',
    description: 'kvm, qemu or auto',
    key: 'virtType',
    value: true,
  },
  { flags: '--connect <uri>', description: 'the libvirt connection', key: 'connect', value: true },
  {
    flags: '--virt-bridge <bridge>',
    description: 'put every nic on this host bridge',
    key: 'virtBridge',
    value: true,
  },
  { flags: '--nogfx', description: 'no graphical console', key: 'nogfx', value: false },
  {
    flags: '--no-start',
    description: 'define the VM but do not start it',
    key: 'start',
    value: false,
    negated: true,
  },
  {
    flags: '--autostart',
    description: 'start the VM when the host boots',
    key: 'autostart',
    value: false,
  },
  {
    flags: '--cache-dir <dir>',
    description: "the agent's blob cache",
    key: 'cacheDir',
    value: true,
  },
  {
    flags: '--cache-limit <size>',
    description: 'evict unused blobs beyond this size',
    key: 'cacheLimit',
    value: true,
  },
  { flags: '--log-dir <dir>', description: 'provisioning logs', key: 'logDir', value: true },
  {
    flags: '--force',
    description:
      '--virt: replace an existing VM; --replace-self: overwrite a target disk that holds a partition table or filesystem (never one in use)',
    key: 'force',
    value: false,
  },
  {
    flags: '--keep-on-failure',
    description: 'leave what a failed run created',
    key: 'keepOnFailure',
    value: false,
  },
  {
    flags: '--target-disk <dev>',
    description: '--replace-self: the disk (or file) written',
    key: 'targetDisk',
    value: true,
  },
  {
    flags: '--reboot',
    description: '--replace-self: reboot when done',
    key: 'reboot',
    value: false,
  },
  {
    flags: '--no-reboot',
    description: '--replace-self: do not reboot',
    key: 'reboot',
    value: false,
    negated: true,
  },
  {
    flags: '--kexec',
    description: '--replace-self: kexec into the new system',
    key: 'kexec',
    value: false,
  },
  {
    flags: '--update',
    description:
      "--virt: update each target's VM to its image reference's release (health-checked, rolled back if it fails); --replace-self: write the system disk(s) and config partition only; data disks kept",
    key: 'update',
    value: false,
  },
  {
    flags: '--via-ramdisk',
    description:
      '--replace-self: the target is a disk the machine runs from: switch into the provisioning ramdisk, which writes it',
    key: 'viaRamdisk',
    value: false,
  },
  {
    flags: '--health-timeout <duration>',
    description: "--virt --update: how long to wait for the image's health marker",
    key: 'healthTimeout',
    value: true,
  },
  {
    flags: '--shutdown-timeout <duration>',
    description: '--virt --update: how long a running VM gets to shut down',
    key: 'shutdownTimeout',
    value: true,
  },
  {
    flags: '--blob-mirror <oci://host/prefix>',
    description:
      "the agents pull disks from this OCI registry first (repeatable; before the plan's blob_mirrors)",
    key: 'blobMirror',
    value: 'repeat',
    repeatable: true,
  },
  {
    flags: '--registry-auth <file>',
    description: "registry credentials file, a path on each target (default: the agent's)",
    key: 'registryAuth',
    value: true,
  },
  {
    flags: '--registry-ca <file>',
    description: "PEM CA bundle for the registries' certificates, a path on each target",
    key: 'registryCa',
    value: true,
  },
  {
    flags: '--insecure-http',
    description: 'the agents talk to the registries over plain http://',
    key: 'insecureHttp',
    value: false,
  },
  {
    flags: '--agent-arg <arg>',
    description: 'one more imgagent argument, passed as is (repeatable)',
    key: 'agentArg',
    value: 'repeat',
    repeatable: true,
  },
];

/**
 * The agent's arguments from the pass-through options, in their table order; not the --set
 * values, which go through stdin (they may be secrets).
 */
export function agentArguments(options: AgentOptions): string[] {
  const argv: string[] = [];
  for (const o of AGENT_OPTIONS) {
    const flag = o.flags.split(/[ ,]+/).find((f) => f.startsWith('--'))!;
    const value = options[o.key];
    if (o.key === 'agentArg' || o.key === 'set') continue;
    if (o.negated) {
      if (value === false) argv.push(flag);
    } else if (o.value === 'repeat') {
      if (Array.isArray(value)) for (const v of value) argv.push(flag, v);
    } else if (o.value === true) {
      if (typeof value === 'string') argv.push(flag, value);
    } else if (value === true) argv.push(flag);
  }
  argv.push(...(options.agentArg ?? []));
  return argv;
}
