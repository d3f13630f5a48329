#!/usr/bin/env bash
# Builds the tiny appliance from Debian packages only, without mounting anything:
#   $OUT_DIR/root.raw        MBR + one bootable FAT partition (syslinux, kernel, initramfs)
#   $OUT_DIR/data.raw        16 MiB of zeros (sparse); the appliance counts its boots there
#   $OUT_DIR/build-info.json tool versions and input hashes, for the record's build: metadata
# Run by `imgctl build tiny-linux` (docs/build.md has the environment); runs on its own too:
#   OUT_DIR=/tmp/out CACHE_DIR=/tmp/cache ./build.sh
# Needs: apt-get, dpkg, depmod/modprobe (kmod), cpio, gzip, sfdisk (fdisk), mkfs.vfat
# (dosfstools), syslinux + syslinux-common, mtools, flock (util-linux). Root is not needed.
set -euo pipefail

: "${OUT_DIR:?OUT_DIR must name the directory the disks go to}"
CACHE_DIR=${CACHE_DIR:-$OUT_DIR/.cache}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SYSTEM_SIZE_MIB=64
DATA_SIZE_MIB=16
PART_START=2048 # sectors: the FAT partition starts at 1 MiB
# What the initramfs loads, in this order; modprobe --show-depends adds their dependencies.
MODULES=(virtio_pci virtio_blk virtio_scsi virtio_net ata_piix ahci sd_mod sr_mod
  isofs vfat nls_cp437 nls_ascii nls_iso8859-1 nls_utf8)

log() { echo "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tiny-linux-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT_DIR" "$CACHE_DIR/debs"
# Builds sharing a cache (parallel test files) take turns: filling it is not safe twice at once.
exec 8>"$CACHE_DIR/.lock"
flock 8
export MTOOLS_SKIP_CHECK=1
# Same inputs, same bytes: file times in the initramfs and on the FAT come from here (mtools
# reads it), so a rebuild with nothing changed gives the same disks and leaves the image alone.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}

# shellcheck source=../../common/debian-build.sh
. "$HERE/../../common/debian-build.sh"
kernel_package=$(kernel_package)
kernel_deb=$(fetch_deb "$kernel_package")
busybox_deb=$(fetch_deb busybox-static)
kernel_cache=$(kernel_with_modules "$kernel_deb" "${MODULES[@]}")
kver=$(cat "$kernel_cache/version")

# The initramfs: busybox, the modules, /init.
log "making the initramfs (kernel $kver)"
dpkg -x "$busybox_deb" "$WORK/busybox"
root="$WORK/initramfs"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,lib/modules}
cp "$WORK/busybox/bin/busybox" "$root/bin/busybox"
cp "$kernel_cache"/modules/* "$root/lib/modules/"
install -m 0755 "$HERE/appliance/init" "$root/init"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) | gzip -9n >"$WORK/initrd.gz"

# The FAT partition, made as a file of its own: syslinux, its config, the kernel, the initramfs.
log "making the system disk"
part_sectors=$(((SYSTEM_SIZE_MIB * 1024 * 1024 / 512) - PART_START))
part="$WORK/part.img"
truncate -s $((part_sectors * 512)) "$part"
mkfs.vfat -F 16 -n TINYLINUX -i 1a2b3c4d -h "$PART_START" --invariant "$part" >/dev/null
syslinux --install "$part"
mcopy -i "$part" "$kernel_cache/vmlinuz" ::/vmlinuz
mcopy -i "$part" "$WORK/initrd.gz" ::/initrd.gz
mcopy -i "$part" "$HERE/appliance/syslinux.cfg" ::/syslinux.cfg

# The whole disk: an MBR partition table with that partition, bootable, and syslinux's MBR code.
disk="$WORK/root.raw"
truncate -s "${SYSTEM_SIZE_MIB}M" "$disk"
printf 'label: dos\nlabel-id: 0x1a2b3c4d\nstart=%d, size=%d, type=6, bootable\n' "$PART_START" "$part_sectors" |
  sfdisk --quiet "$disk"
dd if="$part" of="$disk" bs=512 seek="$PART_START" conv=notrunc,sparse status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none

truncate -s "${DATA_SIZE_MIB}M" "$WORK/data.raw"

deb_version() { dpkg-deb --field "$1" Version; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
cat >"$WORK/build-info.json" <<JSON
{
  "tools": {
    "kernel": "$kernel_package $(deb_version "$kernel_deb")",
    "busybox": "busybox-static $(deb_version "$busybox_deb")",
    "syslinux": "$(dpkg-query -W -f '${Version}' syslinux 2>/dev/null || echo unknown)"
  },
  "inputs": {
    "$(basename "$kernel_deb")": "$(sha "$kernel_deb")",
    "$(basename "$busybox_deb")": "$(sha "$busybox_deb")",
    "appliance/init": "$(sha "$HERE/appliance/init")",
    "appliance/syslinux.cfg": "$(sha "$HERE/appliance/syslinux.cfg")",
    "common/debian-build.sh": "$(sha "$HERE/../../common/debian-build.sh")"
  }
}
JSON
mv "$WORK/root.raw" "$WORK/data.raw" "$WORK/build-info.json" "$OUT_DIR/"
log "done: $OUT_DIR/root.raw, $OUT_DIR/data.raw"
