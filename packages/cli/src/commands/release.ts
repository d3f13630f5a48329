import type { CommandSpec } from '../command.ts';

export const releaseCommands: CommandSpec[] = [
  {
    path: ['release', 'create'],
    summary:
      "freeze the image's working revision as IMAGE@REV: descriptor, records, files and disk digests never change again",
    args: ['<image>'],
    options: [
      {
        flags: '-c, --channel <channel>',
        description: 'point this channel at the new release (repeatable)',
        repeatable: true,
      },
    ],
    examples: [
      'imgctl release create web',
      'imgctl release create web --channel stable --channel beta',
      'imgctl release create web --json | jq -r .ref',
    ],
    load: () => import('./release-create.ts'),
  },
  {
    path: ['release', 'deprecate'],
    summary: 'mark a release deprecated: still served, with a warning the agent prints',
    args: ['<release>'],
    options: [{ flags: '--reason <text>', description: 'why, as shown to whoever plans it' }],
    examples: [
      'imgctl release deprecate web@2',
      'imgctl release deprecate web@2 --reason "slow boot, use web@3"',
    ],
    load: () => import('./release-deprecate.ts'),
  },
  {
    path: ['release', 'revoke'],
    summary:
      'revoke a release: plans for it are refused with the reason, no channel may point at it, its blobs are not served',
    args: ['<release>'],
    options: [
      { flags: '--reason <text>', description: 'why, as shown to whoever plans it (required)' },
    ],
    examples: [
      'imgctl release revoke web@2 --reason "CVE-2026-1234 in openssl"',
      'imgctl channel set web stable 3 && imgctl release revoke web@2 --reason "broken network"',
    ],
    load: () => import('./release-revoke.ts'),
  },
];
