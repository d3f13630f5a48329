/** Files written by `imgctl init` and `imgctl image create`; hand-editable, with comments. */

export function storeYaml(name: string): string {
  return `apiVersion: imgctl/v1
kind: ImageStore
name: ${name}
description: Images and target systems provisioned with imgctl.
defaults:
  record: default
  virt_type: auto
server:
  listen: 127.0.0.1:8460
`;
}

export const STORE_GITIGNORE = `# disk contents and runtime state never go into git
.blobs/
.state/
`;

export const FUNCTIONS_SH = `# Helpers for provision.sh and custom scripts: . "$IMAGE_STORE/common/functions.sh"
log() {
  printf '%s %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"\${LOG_FILE:-/dev/stderr}"
}

die() {
  log "error: $*"
  exit 1
}

# run_parts DIR: runs every NN-*.sh in DIR in order, stopping at the first failure.
run_parts() {
  for script in "$1"/[0-9][0-9]-*.sh; do
    [ -e "$script" ] || continue
    log "running $script"
    sh "$script" || die "$script failed"
  done
}
`;

export const DEFS_SH = `# Common definitions shared by every image's scripts.
IMGCTL_LOG_DIR=/var/log/imgctl
`;

export function imageYaml(name: string): string {
  return `apiVersion: imgctl/v1
kind: Image
name: ${name}
label: ${name}
description: Describe what ${name} is for.
revision: 1
os:
  family: linux
  arch: x86_64
boot:
  - type: hvm
    arch: x86_64
    features: [acpi, apic]
    firmware: bios
    loader: hd
    drives:
      - disk: root
        target: vda
devices:
  vcpus: 1
  memory: 512MiB
  nics:
    - model: virtio
      network: default
  graphics: none
  console: serial
disks:
  # add the content with: imgctl disk add ${name} --id root --use system FILE
  - id: root
    use: system
    format: qcow2
    size: 4GiB
parameters: {}
provision:
  script: provision.sh
  custom_scripts: []
  kickstart: kickstart.ks
`;
}

export function descriptionMd(name: string): string {
  return `# ${name}

What this image is, what it assumes about the host and the network, and its caveats.
`;
}

export const PROVISION_SH = `#!/bin/sh
# Runs on the target after the disks are in place. The environment holds IMAGE_STORE,
# IMAGE_NAME, VM_NAME, VM_CONFIG, IMAGE_CONFIG and LOG_FILE.
set -eu
echo "provisioning $VM_NAME from $IMAGE_NAME"
`;

export const KICKSTART_KS = `# Kickstart the image is built from; rendered per system by imgctl (Liquid/Jinja-like syntax).
text
lang en_US.UTF-8
keyboard us
timezone UTC --utc
network --bootproto=dhcp --hostname={{ HOSTNAME }}
rootpw --lock
bootloader --location=mbr
clearpart --all --initlabel
autopart --type=plain
%packages
@core
%end
`;

export function recordYaml(image: string, record: string): string {
  return `apiVersion: imgctl/v1
kind: ImageRecord
name: ${record}
image: ${image}
description: Provision ${image} with the image's own defaults.
provision: {}
`;
}
