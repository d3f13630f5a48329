import type { CommandSpec } from '../command.ts';

export const diskCommands: CommandSpec[] = [
  {
    path: ['disk', 'add'],
    summary:
      'add or replace a disk of an image: content into .blobs/ (hashed while copied), format and size read by qemu-img, revision bumped',
    args: ['<image>', '[file]'],
    options: [
      { flags: '--id <id>', description: 'the disk id (declared in image.yaml, or added)' },
      { flags: '--use <use>', description: 'system, data or scratch' },
      {
        flags: '--url <url>',
        description: 'content stored elsewhere: downloaded once to record its sha256, format, size',
      },
      { flags: '--keep', description: 'with --url: keep the downloaded content as a blob too' },
      {
        flags: '--keep-raw',
        description:
          'store a mostly-empty sparse raw FILE as it is (by default one with at least 1 GiB of holes and under half allocated is stored as qcow2)',
      },
      { flags: '--size <size>', description: 'scratch disks: the size of the empty disk' },
      {
        flags: '--format <format>',
        description: 'scratch disks: raw or qcow2 (content: must match what qemu-img reads)',
      },
    ],
    examples: [
      'imgctl disk add web --id root --use system ./build/root.qcow2',
      'imgctl disk add web --id data --use data ./data.raw --json',
      'imgctl disk add web --id root --use system --url https://images.example.com/web-root.qcow2',
      'imgctl disk add web --id tmp --use scratch --size 10GiB --format qcow2',
    ],
    load: () => import('./disk-add.ts'),
  },
  {
    path: ['disk', 'verify'],
    summary: "rehash every blob of an image's disks (exit 7 when one is missing or corrupted)",
    args: ['<image>'],
    examples: ['imgctl disk verify web', 'imgctl disk verify web --json'],
    load: () => import('./disk-verify.ts'),
  },
];
