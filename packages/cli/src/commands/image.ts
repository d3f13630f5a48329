import type { CommandSpec } from '../command.ts';

export const imageCommands: CommandSpec[] = [
  {
    path: ['image', 'create'],
    summary:
      'scaffold an image: image.yaml, description.md, provision.sh, kickstart.ks, records/default.yaml',
    args: ['<name>'],
    examples: ['imgctl image create web', 'imgctl image create db --store /srv/images --json'],
    load: () => import('./image-create.ts'),
  },
  {
    path: ['image', 'list'],
    summary: 'list the images of the store',
    examples: ['imgctl image list', 'imgctl image list --json | jq -r ".[].name"'],
    load: () => import('./image-list.ts'),
  },
  {
    path: ['image', 'show'],
    summary: "show an image's descriptor, records, files and the systems that use it",
    args: ['<name>'],
    examples: ['imgctl image show web', 'imgctl image show web --json'],
    load: () => import('./image-show.ts'),
  },
  {
    path: ['image', 'history'],
    summary:
      'list the releases of an image, oldest first: lineage, channels, when and by whom, state (deprecated, revoked, why)',
    args: ['<image>'],
    examples: [
      'imgctl image history web',
      'imgctl image history web --json | jq ".releases[].state"',
    ],
    load: () => import('./image-history.ts'),
  },
  {
    path: ['image', 'copy'],
    summary: 'create like: a new image with the same files, revision 1, parent set to the source',
    args: ['<source>', '<new>'],
    examples: ['imgctl image copy web web-staging'],
    load: () => import('./image-copy.ts'),
  },
  {
    path: ['image', 'set'],
    summary: 'edit fields of image.yaml in place, keeping comments and formatting',
    args: ['<name>', '<assignments...>'],
    examples: [
      'imgctl image set web devices.memory=1GiB devices.vcpus=2',
      'imgctl image set web labels.tier=frontend "label=Web appliance"',
      'imgctl image set web boot[0].features=[acpi,apic,pae]',
    ],
    load: () => import('./image-set.ts'),
  },
  {
    path: ['image', 'remove'],
    summary: 'remove an image (refused while a system uses it)',
    args: ['<name>'],
    options: [{ flags: '-f, --force', description: 'remove even when systems use it' }],
    examples: ['imgctl image remove web-old', 'imgctl image remove web --force'],
    load: () => import('./image-remove.ts'),
  },
  {
    path: ['image', 'validate'],
    summary: 'check one image (with its records and the systems using it) or the whole store',
    args: ['[name]'],
    examples: [
      'imgctl image validate',
      'imgctl image validate web',
      'imgctl image validate --json',
    ],
    load: () => import('./image-validate.ts'),
  },
];
