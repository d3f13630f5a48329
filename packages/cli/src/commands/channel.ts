import type { CommandSpec } from '../command.ts';

export const channelCommands: CommandSpec[] = [
  {
    path: ['channel', 'set'],
    summary:
      'point a channel of an image at a release (one line of releases/IMAGE/channels.yaml changes)',
    args: ['<image>', '<channel>', '<revision>'],
    examples: ['imgctl channel set web stable 3', 'imgctl channel set web beta 4 --json'],
    load: () => import('./channel-set.ts'),
  },
  {
    path: ['channel', 'list'],
    summary: 'list the channels of an image: the release each points at and its state',
    args: ['<image>'],
    examples: ['imgctl channel list web', 'imgctl channel list web --json'],
    load: () => import('./channel-list.ts'),
  },
];
