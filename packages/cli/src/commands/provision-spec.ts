import type { CommandSpec } from '../command.ts';
import { AGENT_OPTIONS } from '../agent-options.ts';

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
        description: 'targets provisioned at the same time (default 10)',
      },
      {
        flags: '--max-unavailable <n>',
        description:
          'a rollout: at most N targets at a time, and no new one once one has failed (instead of --parallel)',
      },
      {
        flags: '--canary <k>',
        description:
          'a rollout: the first K targets first; the rest only when they all succeed (no new one after a failure)',
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
      'imgctl provision --targets fleet.txt --replace-self --update --image web@stable --canary 1 --max-unavailable 2',
      'imgctl provision --targets hypervisors.txt --virt --update --canary 1 --max-unavailable 1   # each VM to its channel',
    ],
    load: () => import('./provision.ts'),
  },
];
