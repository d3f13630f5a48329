#!/usr/bin/env bash
# Builds a minimal Debian 12 (bookworm) cloud image from Debian packages, without mounting:
#   $OUT_DIR/root.raw        MBR: 1) a FAT boot partition (syslinux, the kernel, Debian's
#                            initramfs) 2) the ext4 root (mke2fs -d from an mmdebstrap tree)
#   $OUT_DIR/build-info.json package versions, for the record's build: metadata
# Inside: systemd, cloud-init (NoCloud and the rest of its datasources, as Debian ships it),
# openssh-server, ifupdown + isc-dhcp-client + resolvconf (Debian's classic network stack, which
# cloud-init renders as /etc/network/interfaces.d), a serial console on ttyS0.
# Run by `imgctl build debian-12` (docs/build.md has the environment); runs on its own too:
#   OUT_DIR=/tmp/out CACHE_DIR=/tmp/cache ./build.sh
# The finished disk is cached in $CACHE_DIR under the hash of this recipe (this file and
# files/): the packages come from the mirror of the day, so a rebuild happens only when the
# recipe changes or the cache is removed.
# Needs: root (mmdebstrap's root mode keeps file owners), mmdebstrap, mke2fs (e2fsprogs), sfdisk
# (fdisk), mkfs.vfat (dosfstools), syslinux + syslinux-common, mtools, flock (util-linux).
set -euo pipefail

: "${OUT_DIR:?OUT_DIR must name the directory the disks go to}"
CACHE_DIR=${CACHE_DIR:-$OUT_DIR/.cache}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DISK_SIZE_MIB=2048
BOOT_START=2048 # sectors: the boot partition starts at 1 MiB
BOOT_SIZE_MIB=128
ROOT_LABEL=debian-root
PACKAGES=(linux-image-amd64 initramfs-tools e2fsprogs systemd-sysv udev dbus cloud-init openssh-server
  ifupdown isc-dhcp-client resolvconf iproute2 iputils-ping netbase sudo locales procps kexec-tools)
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)

log() { echo "$*" >&2; }

mkdir -p "$OUT_DIR" "$CACHE_DIR"
exec 8>"$CACHE_DIR/.lock"
flock 8

key=$( (
  cd "$HERE"
  find build.sh syslinux.cfg files -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
) | sha256sum | cut -c1-16)
cached="$CACHE_DIR/disk-$key"
if [ -f "$cached/root.raw" ]; then
  log "using the disk built before from this recipe ($cached)"
  cp --sparse=always "$cached/root.raw" "$OUT_DIR/root.raw"
  cp "$cached/build-info.json" "$OUT_DIR/build-info.json"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/debian-12-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export MTOOLS_SKIP_CHECK=1
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}

log "mmdebstrap: Debian 12 with ${PACKAGES[*]}"
rootfs="$WORK/rootfs"
include=$(IFS=, && echo "${PACKAGES[*]}")
hooks=(
  --customize-hook="sync-in '$HERE/files' /"
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*'
  --customize-hook='echo debian >"$1/etc/hostname"'
  --customize-hook='printf "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" >"$1/etc/hosts"'
  --customize-hook='printf "LABEL='"$ROOT_LABEL"'\t/\text4\terrors=remount-ro\t0\t1\n" >"$1/etc/fstab"'
  --customize-hook='sed -i "s/^# *\(en_US.UTF-8\)/\1/" "$1/etc/locale.gen" && chroot "$1" locale-gen >/dev/null'
  --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" >"$1/../packages.txt"'
)
mmdebstrap --mode=root --variant=minbase --format=directory --include="$include" "${hooks[@]}" \
  bookworm "$rootfs" "${MIRRORS[@]}" >&2

kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
initrd="$rootfs/boot/initrd.img-${kernel##*/vmlinuz-}"
[ -f "$initrd" ] || { log "no initramfs for $kernel"; exit 1; }

log "making the boot partition"
boot="$WORK/boot.img"
truncate -s "${BOOT_SIZE_MIB}M" "$boot"
mkfs.vfat -F 16 -n DEBBOOT -i 2b3c4d5e --invariant "$boot" >/dev/null
syslinux --install "$boot"
mcopy -i "$boot" "$kernel" ::/vmlinuz
mcopy -i "$boot" "$initrd" ::/initrd.img
sed "s/@ROOT_LABEL@/$ROOT_LABEL/" "$HERE/syslinux.cfg" >"$WORK/syslinux.cfg"
mcopy -i "$boot" "$WORK/syslinux.cfg" ::/syslinux.cfg

log "making the root filesystem"
root_start=$((BOOT_START + BOOT_SIZE_MIB * 2048))
root_sectors=$((DISK_SIZE_MIB * 2048 - root_start - 2048))
root="$WORK/root.img"
mke2fs -q -t ext4 -L "$ROOT_LABEL" -d "$rootfs" "$root" "$((root_sectors / 2))k"

log "making the disk"
disk="$WORK/root.raw"
truncate -s "${DISK_SIZE_MIB}M" "$disk"
printf 'label: dos\nlabel-id: 0x2b3c4d5e\nstart=%d, size=%d, type=6, bootable\nstart=%d, size=%d, type=83\n' \
  "$BOOT_START" "$((BOOT_SIZE_MIB * 2048))" "$root_start" "$root_sectors" | sfdisk --quiet "$disk"
dd if="$boot" of="$disk" bs=512 seek="$BOOT_START" conv=notrunc,sparse status=none
dd if="$root" of="$disk" bs=512 seek="$root_start" conv=notrunc,sparse status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none

version() { awk -v p="$1" '$1 == p { print $2 }' "$WORK/packages.txt"; }
cat >"$WORK/build-info.json" <<JSON
{
  "tools": {
    "kernel": "$(basename "$kernel")",
    "cloud-init": "cloud-init $(version cloud-init)",
    "systemd": "systemd $(version systemd)",
    "openssh-server": "openssh-server $(version openssh-server)",
    "mmdebstrap": "$(mmdebstrap --version | cut -d' ' -f2)",
    "syslinux": "$(dpkg-query -W -f '${Version}' syslinux 2>/dev/null || echo unknown)"
  },
  "inputs": {
    "recipe": "$key",
    "packages": "$(sha256sum "$WORK/packages.txt" | cut -d' ' -f1)"
  }
}
JSON
mkdir -p "$cached.tmp.$$"
cp --sparse=always "$disk" "$cached.tmp.$$/root.raw"
cp "$WORK/build-info.json" "$cached.tmp.$$/"
rm -rf "$cached"
mv -T "$cached.tmp.$$" "$cached"
mv "$disk" "$WORK/build-info.json" "$OUT_DIR/"
log "done: $OUT_DIR/root.raw"
