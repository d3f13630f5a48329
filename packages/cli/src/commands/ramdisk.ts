import type { CommandSpec } from '../command.ts';

export const ramdiskCommands: CommandSpec[] = [
  {
    path: ['ramdisk', 'build'],
    summary:
      "run the store's ramdisk/build.sh and store the provisioning ramdisk it makes (kernel and initramfs as blobs, ramdisk/ramdisk.yaml)",
    options: [
      {
        flags: '--keep-scratch',
        description: 'keep the scratch directory (OUT_DIR) under .state/build/',
      },
    ],
    examples: [
      'imgctl ramdisk build',
      'IMGCTL_AGENT_EXECUTABLE=dist/imgagent-linux-x64 imgctl ramdisk build --store /srv/images',
      'imgctl ramdisk build --json',
    ],
    load: () => import('./ramdisk-build.ts'),
  },
];
