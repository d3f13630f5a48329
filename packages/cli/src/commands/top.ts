import type { CommandSpec } from '../command.ts';

export const topCommands: CommandSpec[] = [
  {
    path: ['init'],
    summary: 'create an image store (store.yaml, common/, custom_scripts/, images/, systems/)',
    args: ['[dir]'],
    options: [
      { flags: '--name <name>', description: 'the store name (default: the directory name)' },
    ],
    examples: ['imgctl init ./image-store', 'imgctl init /srv/images --name lab'],
    load: () => import('./init.ts'),
  },
  {
    path: ['plan'],
    summary: 'resolve image defaults < record < system < --set into the plan the agent executes',
    args: ['<image>'],
    options: [
      {
        flags: '-r, --record <record>',
        description: "the record (default: the system's, else the store default)",
      },
      {
        flags: '-s, --system <system>',
        description: 'the target system: a name, MAC address or hostname',
      },
      {
        flags: '--set <name=value>',
        description: 'set a parameter for this plan only (repeatable)',
        repeatable: true,
      },
      {
        flags: '--vm-name <name>',
        description: 'the VM name (default: the system name, else the image name)',
      },
      {
        flags: '--render <file>',
        description: "print a rendered image file instead of the plan: 'kickstart'",
      },
    ],
    examples: [
      'imgctl plan web',
      'imgctl plan web --record large --system web01',
      'imgctl plan web --system 52:54:00:12:34:56 --set http_port=8080 --json',
      'imgctl plan web --system web01 --render kickstart',
    ],
    load: () => import('./plan.ts'),
  },
];
