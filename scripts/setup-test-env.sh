#!/usr/bin/env bash
# Installs the Debian packages the tests need, when they are missing. The one list of them is
# here; later issues add qemu, libvirt, sshd and friends. Needs root to install; without root
# it only says what is missing.
set -euo pipefail

# package → a command it provides (or an absolute path of a file it installs), to tell whether
# it is already there
declare -A PACKAGES=(
  [git]=git
  [qemu-utils]=qemu-img
  # building and booting the tiny appliance (images/tiny-linux/build.sh, test/appliance-boot)
  [qemu-system-x86]=qemu-system-x86_64
  [syslinux]=syslinux
  [syslinux-common]=/usr/lib/syslinux/mbr/mbr.bin
  [mtools]=mcopy
  [dosfstools]=mkfs.vfat
  [fdisk]=sfdisk
  [cpio]=cpio
  [kmod]=depmod
  [genisoimage]=genisoimage
  [xorriso]=xorriso
  [busybox-static]=busybox
  # imgctl serve: TLS test certificates; the baseline server of bench/serve
  [openssl]=openssl
  # capture --from-domain (virsh with the test driver); .tar.zst archives; peak RSS of pack/import
  [libvirt-clients]=virsh
  # virt-xml-validate (libvirt-clients) runs xmllint, which libvirt-clients only recommends
  [libxml2-utils]=xmllint
  [zstd]=zstd
  [time]=/usr/bin/time
  [nginx]=/usr/sbin/nginx
  # imgagent --virt e2e and the demo: a real libvirtd (scripts/start-libvirt.sh), a host bridge
  [libvirt-daemon]=libvirtd
  [libvirt-daemon-driver-qemu]=/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so
  [iproute2]=/sbin/ip
  [procps]=pgrep
  [curl]=curl
  # imgagent --replace-self e2e: loop devices and mounts (losetup), a mounted ext4 target,
  # hole punching (fallocate), the config partition (sfdisk, mkfs.vfat and mtools above)
  [mount]=losetup
  [e2fsprogs]=mkfs.ext4
  [util-linux]=fallocate
  # imgctl provision e2e and bench/provision-fanout: a real sshd, ssh-keygen for its keys
  [openssh-server]=/usr/sbin/sshd
  [openssh-client]=ssh-keygen
  # images/debian-12/build.sh (test/debian-cloud-init): a Debian tree from packages
  [mmdebstrap]=mmdebstrap
  # npm run package (dpkg-shlibdeps) and test/package-deb: the imgctl package's user (adduser),
  # systemd-analyze verify of its unit, its man pages rendered
  [dpkg-dev]=dpkg-shlibdeps
  [adduser]=adduser
  [systemd]=systemd-analyze
  [man-db]=man
  [groff-base]=groff
  # network boot e2e (test/netboot): a VM's iPXE ROM asks dnsmasq on a test bridge for its boot
  # script (ipxe-qemu: the ROMs qemu's -boot n runs); --via-ramdisk switches with kexec
  [dnsmasq-base]=/usr/sbin/dnsmasq
  [ipxe-qemu]=/usr/lib/ipxe/qemu/pxe-virtio.rom
  [kexec-tools]=kexec
  # OCI registries (test/registry-client and issue 16): Debian's distribution 2.8 as the registry,
  # skopeo as the independent client, htpasswd for the registry's bcrypt password file
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [apache2-utils]=htpasswd
)

missing=()
for package in "${!PACKAGES[@]}"; do
  probe=${PACKAGES[$package]}
  command -v "$probe" >/dev/null 2>&1 || [ -e "$probe" ] || missing+=("$package")
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-test-env: missing packages: ${missing[*]} (install them, or run as root on Debian)" >&2
  exit 1
fi

echo "setup-test-env: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || echo "setup-test-env: apt-get update failed; installing from the package lists already here" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
