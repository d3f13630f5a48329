#!/usr/bin/env bash
# Builds the provisioning ramdisk (docs/netboot.md): a Debian kernel and an initramfs holding
# busybox, the self-contained imgagent and the programs it runs for --replace-self, each with
# its shared libraries, and the storage and network modules a server needs.
#   $OUT_DIR/vmlinuz          the kernel (linux-image-amd64's current package)
#   $OUT_DIR/initrd.img       the initramfs (cpio newc, zstd)
#   $OUT_DIR/cmdline          the kernel arguments the ramdisk itself needs (one line)
#   $OUT_DIR/build-info.json  tool versions and input hashes
# Run by `imgctl ramdisk build` (docs/netboot.md has the environment); runs on its own too:
#   OUT_DIR=/tmp/out CACHE_DIR=/tmp/cache IMGCTL_AGENT_EXECUTABLE=dist/imgagent-linux-x64 ./build.sh
# The kernel and busybox are downloaded as Debian packages (apt-get download, no root) and kept
# in CACHE_DIR/debs/; the other programs and their libraries are this host's (a Debian 12 host:
# their packages and versions go into build-info.json). The finished pair is kept in CACHE_DIR
# under the hash of every input, so a rebuild with nothing changed copies it.
# Needs: apt-get, dpkg, depmod/modprobe (kmod), cpio, zstd, ldd, flock (util-linux), and the
# programs put in: qemu-img (qemu-utils), sfdisk and blkid (fdisk, util-linux), mkfs.vfat
# (dosfstools), mtools, openssl, GNU coreutils.
set -euo pipefail
umask 022

: "${OUT_DIR:?OUT_DIR must name the directory the kernel and initramfs go to}"
: "${IMGCTL_AGENT_EXECUTABLE:?IMGCTL_AGENT_EXECUTABLE must name the self-contained imgagent (npm run build: dist/imgagent-linux-x64)}"
CACHE_DIR=${CACHE_DIR:-$OUT_DIR/.cache}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# What the ramdisk needs on its own command line; the server adds imgctl.server= and the rest.
# quiet: the kernel does not print its command line (which may hold a token) on the console.
CMDLINE="console=tty0 console=ttyS0,115200n8 quiet panic=10"
# Loaded at boot in this order (with their dependencies, from modprobe --show-depends): storage
# first, then network. A driver whose hardware is absent loads and binds nothing.
MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod ahci ata_piix nvme megaraid_sas mpt3sas
  virtio_net e1000 e1000e igb ixgbe i40e tg3 bnx2 r8169)
# The programs imgagent --replace-self runs (packages/core/src/agent: target-disk.ts,
# config-partition.ts, replace-self.ts, steps.ts); busybox provides sh, sync, blockdev, reboot.
PROGRAMS=(qemu-img sfdisk blkid mkfs.vfat mkfs.fat mcopy mtype mtools dd fallocate openssl)

log() { echo "$*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

[ -f "$IMGCTL_AGENT_EXECUTABLE" ] || { log "no such file: $IMGCTL_AGENT_EXECUTABLE"; exit 1; }
mkdir -p "$OUT_DIR" "$CACHE_DIR/debs"
# Builds sharing a cache take turns: filling it is not safe twice at once.
exec 8>"$CACHE_DIR/.lock"
flock 8
# Same inputs, same bytes: every file of the initramfs gets this time, owner 0:0.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ramdisk-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# shellcheck source=../common/debian-build.sh
. "$HERE/../common/debian-build.sh"
kernel_package=$(kernel_package)
kernel_deb=$(fetch_deb "$kernel_package")
busybox_deb=$(fetch_deb busybox-static)
kernel_cache=$(kernel_with_modules "$kernel_deb" "${MODULES[@]}")
kver=$(cat "$kernel_cache/version")

# The host's programs and every library they load (ldd), at their paths with the directories
# resolved (/lib → /usr/lib on a merged-/usr host); a symlink (mkfs.vfat → mkfs.fat, mcopy →
# mtools, libz.so.1 → libz.so.1.2.13) stays one and brings its target.
canonical() { echo "$(realpath "$(dirname "$1")")/$(basename "$1")"; }
host_files() {
  local program path
  for program in "${PROGRAMS[@]}"; do
    path=$(command -v "$program") || { log "missing on this host: $program"; exit 1; }
    echo "$path"
    ldd "$path" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'
  done
  ldd "$IMGCTL_AGENT_EXECUTABLE" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'
  # mtools converts file names through iconv to its default code page, CP850: glibc loads that
  # conversion from its gconv directory, beside libc.
  local gconv
  gconv="$(dirname "$(ldd "$(command -v mtools)" | sed -n 's/.*=> \(\/[^ ]*\/libc\.so\.6\).*/\1/p')")/gconv"
  echo "$gconv/IBM850.so"
  echo "$gconv/gconv-modules.cache"
}
mapfile -t files < <(host_files | while read -r f; do
  canonical "$f"
  readlink -f "$f"
done | LC_ALL=C sort -u)

# Every input, hashed: when the finished pair for this key is cached, it is the answer.
inputs="$WORK/inputs"
{
  (cd "$HERE" && find . -type f ! -name ramdisk.yaml -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  echo "$(sha "$HERE/../common/debian-build.sh") common/debian-build.sh"
  echo "$(sha "$kernel_deb") $(basename "$kernel_deb")"
  echo "$(sha "$busybox_deb") $(basename "$busybox_deb")"
  echo "$(sha "$IMGCTL_AGENT_EXECUTABLE") imgagent"
  printf '%s\n' "${MODULES[@]}" "$CMDLINE" "$SOURCE_DATE_EPOCH"
  for f in "${files[@]}"; do [ -L "$f" ] && echo "link $f $(readlink "$f")" || echo "$(sha "$f") $f"; done
} >"$inputs"
key=$(sha "$inputs" | cut -c1-16)
cached="$CACHE_DIR/out-$key"
if [ -f "$cached/initrd.img" ]; then
  log "using the ramdisk built before from the same inputs ($cached)"
  cp "$cached"/{vmlinuz,initrd.img,cmdline,build-info.json} "$OUT_DIR/"
  exit 0
fi

log "making the initramfs (kernel $kver)"
root="$WORK/initramfs"
# A merged /usr, as Debian 12 has: the host's paths land where they belong either way.
mkdir -p "$root"/{dev,proc,sys,tmp,run,root,etc,usr/bin,usr/sbin,usr/lib/modules,usr/lib64}
for dir in bin sbin lib lib64; do ln -s "usr/$dir" "$root/$dir"; done
chmod 1777 "$root/tmp"
# The host's files at their own paths; a symlink stays one (its target is in the list too).
for f in "${files[@]}"; do
  mkdir -p "$root$(dirname "$f")"
  if [ -L "$f" ]; then
    ln -s "$(readlink -f "$f")" "$root$f"
  else
    cp -L "$f" "$root$f"
  fi
done
dpkg -x "$busybox_deb" "$WORK/busybox"
cp "$WORK/busybox/bin/busybox" "$root/bin/busybox"
# Every busybox applet in /usr/bin, except where a program of the host has the name (GNU dd,
# not busybox's, which lacks iflag=nocache).
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/usr/bin/$applet" ] || [ -e "$root/usr/sbin/$applet" ] ||
    ln -s busybox "$root/usr/bin/$applet"
done
cp "$IMGCTL_AGENT_EXECUTABLE" "$root/usr/bin/imgagent"
chmod 0755 "$root/usr/bin/imgagent"
cp "$kernel_cache"/modules/* "$root/lib/modules/"
install -m 0755 "$HERE/init" "$root/init"
install -m 0755 "$HERE/udhcpc.script" "$root/etc/udhcpc.script"
install -m 0755 "$HERE/reboot" "$root/usr/sbin/reboot"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
echo "$CMDLINE" >"$WORK/cmdline"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) >"$WORK/initrd.cpio"
log "compressing the initramfs ($(($(stat -c %s "$WORK/initrd.cpio") / 1048576)) MiB)"
zstd -q -19 -T0 --no-progress -c "$WORK/initrd.cpio" >"$WORK/initrd.img"
cp "$kernel_cache/vmlinuz" "$WORK/vmlinuz"

deb_version() { dpkg-deb --field "$1" Version; }
owner() { # the package and version a host file comes from
  local package
  package=$(dpkg -S "$1" 2>/dev/null || dpkg -S "${1#/usr}" 2>/dev/null) || { echo unknown; return; }
  package=${package%%:*}
  echo "$package $(dpkg-query -W -f '${Version}' "$package" 2>/dev/null)"
}
{
  echo '{'
  echo '  "tools": {'
  echo "    \"kernel\": \"$kernel_package $(deb_version "$kernel_deb")\","
  echo "    \"busybox\": \"busybox-static $(deb_version "$busybox_deb")\","
  for program in qemu-img sfdisk mkfs.fat mtools dd openssl; do
    echo "    \"$program\": \"$(owner "$(readlink -f "$(command -v "$program")")")\","
  done
  echo "    \"libc\": \"$(owner "$(ldd "$IMGCTL_AGENT_EXECUTABLE" | sed -n 's/.*=> \(\/[^ ]*libc\.so[^ ]*\).*/\1/p')")\""
  echo '  },'
  echo '  "inputs": {'
  echo "    \"$(basename "$kernel_deb")\": \"$(sha "$kernel_deb")\","
  echo "    \"$(basename "$busybox_deb")\": \"$(sha "$busybox_deb")\","
  echo "    \"common/debian-build.sh\": \"$(sha "$HERE/../common/debian-build.sh")\","
  echo "    \"imgagent\": \"$(sha "$IMGCTL_AGENT_EXECUTABLE")\""
  echo '  }'
  echo '}'
} >"$WORK/build-info.json"

# Kept for the next build with the same inputs (the two newest sets only).
mkdir -p "$cached.tmp.$$"
cp "$WORK"/{vmlinuz,initrd.img,cmdline,build-info.json} "$cached.tmp.$$/"
rm -rf "$cached" && mv -T "$cached.tmp.$$" "$cached"
find "$CACHE_DIR" -maxdepth 1 -name 'out-*' -type d -printf '%T@ %p\n' | sort -rn | tail -n +3 |
  cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
mv "$WORK"/{vmlinuz,initrd.img,cmdline,build-info.json} "$OUT_DIR/"
log "done: $OUT_DIR/vmlinuz ($(stat -c %s "$OUT_DIR/vmlinuz") bytes), $OUT_DIR/initrd.img ($(stat -c %s "$OUT_DIR/initrd.img") bytes)"
