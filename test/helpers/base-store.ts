/**
 * A small valid store used as the starting point of many tests: image `web` with a system disk
 * and a data disk, parameters of every kind (customizable, fixed, secret, computed), a custom
 * script set, records `default` and `large`, and systems `web01` and `web02`.
 */
export const WEB_IMAGE = `apiVersion: imgctl/v1
kind: Image
name: web
label: Web appliance
description: A web server with its content on a data disk.
revision: 3
os:
  family: linux
  distro: debian
  version: '12'
  arch: x86_64
labels:
  tier: frontend
boot:
  - type: hvm
    arch: x86_64
    features: [acpi, apic]
    firmware: bios
    loader: hd
    drives:
      - disk: root
        target: vda
      - disk: data
        target: vdb
devices:
  vcpus: 1
  memory: 1GiB
  nics:
    - model: virtio
      network: default
  graphics: none
  console: serial
disks:
  - id: root
    use: system
    format: qcow2
    size: 4GiB
  - id: data
    use: data
    format: qcow2
    size: 2GiB
parameters:
  http_port:
    default: 80
    type: integer
    description: port the web server listens on
  admin_user:
    default: admin
    type: string
    customizable: false
  db_password:
    default: changeme
    type: string
    secret: true
  server_name:
    computed: '{{ HOSTNAME }}:{{ http_port }}'
provision:
  script: provision.sh
  custom_scripts: [hardening]
  kickstart: kickstart.ks
`;

export const WEB_DEFAULT_RECORD = `apiVersion: imgctl/v1
kind: ImageRecord
name: default
image: web
description: Provision web with its own defaults.
provision: {}
`;

export const WEB_LARGE_RECORD = `apiVersion: imgctl/v1
kind: ImageRecord
name: large
image: web
description: More of everything.
provision:
  vcpus: 4
  memory: 4GiB
  disks:
    data:
      size: 20GiB
  parameters:
    http_port: 8080
`;

export const WEB01_SYSTEM = `apiVersion: imgctl/v1
kind: System
name: web01
hostname: web01.example.com
image: web
record: default
interfaces:
  - name: eth0
    mac: 52:54:00:12:34:56
    ip: 192.0.2.10/24
    gateway: 192.0.2.1
    dns: [192.0.2.53]
parameters:
  http_port: 8081
`;

export const WEB02_SYSTEM = `apiVersion: imgctl/v1
kind: System
name: web02
hostname: web02.example.com
image: web
record: large
interfaces:
  - name: eth0
    mac: 52:54:00:12:34:57
    dhcp: true
`;

export const BASE_TREE: Record<string, string> = {
  'images/web/image.yaml': WEB_IMAGE,
  'images/web/description.md': '# web\n\nA web server.\n',
  'images/web/provision.sh': '#!/bin/sh\nset -eu\necho "provisioning $VM_NAME"\n',
  'images/web/kickstart.ks': 'text\nnetwork --hostname={{ HOSTNAME }}\n',
  'images/web/custom_scripts/hardening/10-ssh.sh': '#!/bin/sh\necho hardening ssh\n',
  'images/web/records/default.yaml': WEB_DEFAULT_RECORD,
  'images/web/records/large.yaml': WEB_LARGE_RECORD,
  'systems/web01.yaml': WEB01_SYSTEM,
  'systems/web02.yaml': WEB02_SYSTEM,
};

export interface MinimalDisk {
  id: string;
  use: 'system' | 'data' | 'scratch';
  /** default raw */
  format?: string;
  /** default 1MiB */
  size?: string;
  sha256?: string;
  blob?: boolean;
}

/**
 * The least a valid image.yaml holds: revision 1, one hvm entry booting disk `root` as vda,
 * 1 vCPU and 256 MiB, and `disks`; `extra` (top-level YAML such as `parameters:`) is appended.
 */
export function minimalImageYaml(options: {
  name: string;
  disks: MinimalDisk[];
  extra?: string;
}): string {
  const disks = options.disks.map((d) =>
    [
      `  - id: ${d.id}`,
      `    use: ${d.use}`,
      `    format: ${d.format ?? 'raw'}`,
      `    size: ${d.size ?? '1MiB'}`,
      ...(d.sha256 === undefined ? [] : [`    sha256: ${d.sha256}`]),
      ...(d.blob === undefined ? [] : [`    blob: ${d.blob}`]),
    ].join('\n'),
  );
  return `apiVersion: imgctl/v1
kind: Image
name: ${options.name}
revision: 1
boot:
  - type: hvm
    arch: x86_64
    loader: hd
    drives:
      - disk: root
        target: vda
devices:
  vcpus: 1
  memory: 256MiB
disks:
${disks.join('\n')}
${options.extra ?? ''}`;
}
