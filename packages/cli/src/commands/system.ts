import type { CommandSpec } from '../command.ts';

export const systemCommands: CommandSpec[] = [
  {
    path: ['system', 'add'],
    summary: 'add a target system: its hostname, interfaces, keys and the image it runs',
    args: ['<name>'],
    options: [
      { flags: '-i, --image <image>', description: 'the image it runs (required)' },
      {
        flags: '-r, --record <record>',
        description: 'the record it is provisioned with',
        defaultValue: 'default',
      },
      { flags: '--hostname <fqdn>', description: 'its hostname (default: the system name)' },
      {
        flags: '--address <[user@]host[:port]>',
        description: 'where imgctl provision reaches it over SSH',
      },
      {
        flags: '--interface <spec>',
        description:
          'NAME[,mac=MAC][,ip=IP/PREFIX][,gateway=IP][,dns=IP;IP][,bridge=BR][,network=NET][,dhcp] (repeatable)',
        repeatable: true,
      },
      {
        flags: '--ssh-key <key>',
        description: 'an authorized public key (repeatable)',
        repeatable: true,
      },
      {
        flags: '--param <name=value>',
        description: 'a parameter value (repeatable)',
        repeatable: true,
      },
      { flags: '--target-disk <dev>', description: 'the disk --replace-self writes over' },
      { flags: '--description <text>', description: 'what this machine is' },
    ],
    examples: [
      'imgctl system add web01 --image web --hostname web01.example.com --interface eth0,mac=52:54:00:12:34:56,ip=192.0.2.10/24,gateway=192.0.2.1',
      'imgctl system add db01 --image db --record large --interface eth0,dhcp --ssh-key "$(cat ~/.ssh/id_ed25519.pub)"',
    ],
    load: () => import('./system-add.ts'),
  },
  {
    path: ['system', 'list'],
    summary: 'list target systems',
    examples: ['imgctl system list', 'imgctl system list --json'],
    load: () => import('./system-list.ts'),
  },
  {
    path: ['system', 'show'],
    summary: 'show a system, found by name, MAC address or hostname',
    args: ['<system>'],
    examples: [
      'imgctl system show web01',
      'imgctl system show 52:54:00:12:34:56',
      'imgctl system show web01.example.com',
    ],
    load: () => import('./system-show.ts'),
  },
  {
    path: ['system', 'set'],
    summary: 'edit fields of a system in place',
    args: ['<system>', '<assignments...>'],
    examples: [
      'imgctl system set web01 record=large',
      'imgctl system set web01 interfaces[0].ip=192.0.2.11/24',
    ],
    load: () => import('./system-set.ts'),
  },
  {
    path: ['system', 'remove'],
    summary: 'remove a system',
    args: ['<system>'],
    examples: ['imgctl system remove web01'],
    load: () => import('./system-remove.ts'),
  },
];
