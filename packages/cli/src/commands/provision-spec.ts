import type { CommandSpec, OptionSpec } from '../command.ts';

/**
 * imgagent options `imgctl provision` passes through unchanged: `key` is commander's name for
 * the option; `value` false for a flag, true for one with a value, 'repeat' for a repeatable
 * one; `negated` for `--no-X`, passed when the option is false.
 */
export const AGENT_OPTIONS: Array<
  OptionSpec & { key: string; value: boolean | 'repeat'; negated?: boolean }
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
    flags: '--agent-arg <arg>',
    description: 'one more imgagent argument, passed as is (repeatable)',
    key: 'agentArg',
    value: 'repeat',
    repeatable: true,
  },
];

export const provisionCommands: CommandSpec[] = [
  {
    path: ['provision'],
    summary:
      'run imgagent on targets over SSH: --virt or --replace-self on many machines at once (docs/provision.md)',
    args: ['[targets...]'],
    options: [
      {
        flags: '--targets <file>',
        description: 'more targets, one per line ([user@]host[:port] or a system name; # comments)',
      },
      {
        flags: '--parallel <n>',
        description: 'targets provisioned at the same time',
        defaultValue: '10',
      },
      {
        flags: '--server <url>',
        description:
          "the imgctl server as the targets reach it (default: $IMGCTL_SERVER, else store.yaml's server.url)",
      },
      { flags: '--token-file <file>', description: 'bearer token for the server (sent on stdin)' },
      {
        flags: '--identity <file>',
        description:
          'a private key to log in with (repeatable; default: the ssh agent and ~/.ssh/id_*)',
        repeatable: true,
      },
      {
        flags: '--known-hosts <file>',
        description:
          'the known_hosts file (default: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts)',
      },
      {
        flags: '--accept-new',
        description: 'accept and record unknown host keys (never changed ones)',
      },
      {
        flags: '--connect-timeout <seconds>',
        description: 'give up on a target that does not complete the SSH handshake in time',
        defaultValue: '15',
      },
      ...AGENT_OPTIONS,
    ],
    examples: [
      'imgctl provision root@hv1 root@hv2:2222 --virt --image web --system web01 --server http://imgsrv:8460',
      'imgctl provision --targets hypervisors.txt --virt --image tiny-linux --dry-run --parallel 20',
      'imgctl provision web01 --replace-self --image web --target-disk /dev/sda --reboot --json',
      'imgctl provision root@hv1 --virt --image web --accept-new --identity ~/.ssh/provision_ed25519',
    ],
    load: () => import('./provision.ts'),
  },
];
