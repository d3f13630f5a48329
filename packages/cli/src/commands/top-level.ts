import type { CommandSpec } from '../command.ts';

const registryFlags = [
  {
    flags: '--registry-auth <file>',
    description:
      'registry credentials as container tools write them (default: $REGISTRY_AUTH_FILE, ~/.docker/config.json)',
  },
  {
    flags: '--registry-ca <file>',
    description: "a PEM CA bundle the registry's certificate is checked against",
  },
  { flags: '--insecure-http', description: 'talk to the registry over plain http://' },
];

/**
 * Commands without a noun that work on the store and its images as a whole: make the store,
 * resolve a plan, build, pack, import, push, export, capture, verify.
 */
export const topLevelCommands: CommandSpec[] = [
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
  {
    path: ['build'],
    summary: "run an image's build.sh recipe and add the disks it produces (docs/build.md)",
    args: ['<image>'],
    options: [
      {
        flags: '-r, --record <record>',
        description: 'the record whose parameters the build sees and whose build: is written',
      },
      {
        flags: '--keep-scratch',
        description: 'keep the scratch directory (OUT_DIR, rendered kickstart) under .state/build/',
      },
    ],
    examples: [
      'imgctl build tiny-linux',
      'imgctl build web --record large --keep-scratch',
      'imgctl build tiny-linux --json',
    ],
    load: () => import('./build.ts'),
  },
  {
    path: ['pack'],
    summary: 'pack an image, its disks and a manifest of hashes into one archive',
    args: ['<image>'],
    options: [
      {
        flags: '-o, --output <file>',
        description: 'the archive: FILE.tar, FILE.tar.gz or FILE.tar.zst (needs zstd)',
      },
    ],
    examples: [
      'imgctl pack web -o web.tar.gz',
      'imgctl pack tiny-linux -o /srv/archive/tiny-linux.tar --json',
    ],
    load: () => import('./pack.ts'),
  },
  {
    path: ['import'],
    summary:
      'import an archive made by pack (file or URL), an image pushed to a registry (oci://…), or a virt-image XML descriptor',
    args: ['<source>'],
    options: [
      { flags: '--as <name>', description: 'import under this image name' },
      { flags: '-f, --force', description: 'replace an image of the same name' },
      {
        flags: '--from <format>',
        description: "what SOURCE is: 'archive' (default) or 'virt-image' (an image.xml)",
      },
      ...registryFlags,
    ],
    examples: [
      'imgctl import web.tar.gz',
      'imgctl import https://images.example.com/web.tar.gz --as web-staging',
      'imgctl import oci://registry.example.org/images/web:3 --registry-auth ~/.config/containers/auth.json',
      'imgctl import --from virt-image ./appliance/image.xml --as appliance',
    ],
    load: () => import('./import.ts'),
  },
  {
    path: ['push'],
    summary:
      'push an image or a release to an OCI registry: its disks as layers, its files in the config',
    args: ['<image>', '<target>'],
    options: [
      ...registryFlags,
      {
        flags: '--chunk-size <size>',
        description: 'upload big blobs in chunks of this size (default 64MiB)',
      },
      {
        flags: '--segment-size <size>',
        description: 'push a disk larger than this as several layers (default 16GiB)',
      },
      {
        flags: '--mount-from <repository>',
        description: 'a repository of the same registry to mount blobs from (repeatable)',
        repeatable: true,
      },
      {
        flags: '--containerdisk',
        description:
          'push the boot disk as a KubeVirt containerDisk (a container image holding /disk/FILE)',
      },
    ],
    examples: [
      'imgctl push web oci://registry.example.org/images/web',
      'imgctl push web@stable oci://registry.example.org:5000/images/web --registry-ca ca.pem',
      'imgctl push tiny-linux@2 oci://127.0.0.1:5000/lab/tiny-linux:2 --registry-auth auth.json --json',
      'imgctl push big@7 oci://quay.example.org/site/big --segment-size 8GiB --chunk-size 256MiB',
      'imgctl push web@stable oci://registry.example.org/kubevirt/web --containerdisk',
    ],
    load: () => import('./push.ts'),
  },
  {
    path: ['export'],
    summary: 'write an image as a plain directory: image.yaml, its files and disks as ID.FORMAT',
    args: ['<image>', '<dir>'],
    examples: ['imgctl export web ./web-export', 'imgctl export tiny-linux /tmp/tiny --json'],
    load: () => import('./export.ts'),
  },
  {
    path: ['capture'],
    summary: 'make a new image from existing disk files or from a libvirt domain',
    args: ['<name>'],
    options: [
      {
        flags: '--from-disk <file...>',
        description: 'disk files; the first is the system disk, the others data disks',
      },
      {
        flags: '--use <uses>',
        description: 'comma-separated use of each --from-disk file: system, data or scratch',
      },
      {
        flags: '--from-domain <domain>',
        description: 'a libvirt domain (read with virsh dumpxml)',
      },
      { flags: '-c, --connect <uri>', description: 'libvirt connection URI for --from-domain' },
      { flags: '-f, --force', description: 'capture a domain even while it is running' },
    ],
    examples: [
      'imgctl capture web --from-disk /var/lib/libvirt/images/web.qcow2',
      'imgctl capture db --from-disk root.qcow2 data.raw --use system,data',
      'imgctl capture web2 --from-domain web --connect qemu:///system',
    ],
    load: () => import('./capture.ts'),
  },
  {
    path: ['verify'],
    summary:
      'check the whole store: every blob rehashed, every file valid, no missing blob, every release as recorded (--gc: remove unused blobs)',
    options: [
      {
        flags: '--gc',
        description:
          'remove blobs no image or release refers to, and temporary files of killed writers',
      },
    ],
    examples: ['imgctl verify', 'imgctl verify --gc', 'imgctl verify --json'],
    load: () => import('./verify.ts'),
  },
];
