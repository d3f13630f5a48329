import type { CommandSpec } from '../command.ts';

export const recordCommands: CommandSpec[] = [
  {
    path: ['record', 'add'],
    summary: 'add a virtual image record: the parameters an image is provisioned with',
    args: ['<image>', '<record>'],
    options: [
      { flags: '--from <record>', description: 'start from a copy of an existing record' },
      { flags: '--description <text>', description: 'what this record is for' },
      { flags: '--vcpus <n>', description: 'virtual CPUs' },
      { flags: '--memory <size>', description: 'memory, e.g. 2GiB' },
      {
        flags: '--disk-size <id=size>',
        description: 'grow a disk, e.g. data=20GiB (repeatable)',
        repeatable: true,
      },
      {
        flags: '--param <name=value>',
        description: 'a parameter value (repeatable)',
        repeatable: true,
      },
    ],
    examples: [
      'imgctl record add web large --vcpus 4 --memory 4GiB --disk-size data=50GiB',
      'imgctl record add web staging --from default --param http_port=8080',
    ],
    load: () => import('./record-add.ts'),
  },
  {
    path: ['record', 'list'],
    summary: "list an image's records",
    args: ['<image>'],
    examples: ['imgctl record list web', 'imgctl record list web --json'],
    load: () => import('./record-list.ts'),
  },
  {
    path: ['record', 'show'],
    summary: 'show a record',
    args: ['<image>', '<record>'],
    examples: ['imgctl record show web large'],
    load: () => import('./record-show.ts'),
  },
  {
    path: ['record', 'set'],
    summary: 'edit fields of a record in place',
    args: ['<image>', '<record>', '<assignments...>'],
    examples: [
      'imgctl record set web large provision.memory=8GiB',
      'imgctl record set web large provision.parameters.workers=8',
    ],
    load: () => import('./record-set.ts'),
  },
  {
    path: ['record', 'remove'],
    summary: 'remove a record (refused while a system uses it)',
    args: ['<image>', '<record>'],
    options: [{ flags: '-f, --force', description: 'remove even when systems use it' }],
    examples: ['imgctl record remove web staging'],
    load: () => import('./record-remove.ts'),
  },
];
