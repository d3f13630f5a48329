#!/usr/bin/env bash
# Starts libvirtd and virtlogd as root on a machine without systemd (tests, the demo), when
# `virsh -c qemu:///system version` does not already answer; waits until it does. Idempotent:
# a daemon that already runs is left alone. See test-environment.md for why each step is needed.
set -euo pipefail

URI=qemu:///system
if virsh -c "$URI" version >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "start-libvirt: libvirtd is not running and starting it needs root" >&2
  exit 1
fi
# Callers started at once (parallel test files) take turns; the first one starts the daemons.
# The daemons do not get fd 9 (9>&-): they would hold the lock for as long as they run.
exec 9>/run/imgctl-start-libvirt.lock
flock 9
if virsh -c "$URI" version >/dev/null 2>&1; then
  exit 0
fi

# libvirtd refuses to start until the user and group it runs guests as exist (Debian's build
# defaults to libvirt-qemu:libvirt-qemu when /etc/libvirt/qemu.conf does not say otherwise).
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  useradd -r -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt/images

# virsh start fails without virtlogd (it keeps the domains' console logs).
pgrep -x virtlogd >/dev/null || virtlogd -d 9>&-
if ! pgrep -x libvirtd >/dev/null; then
  if [ -e /dev/kvm ] && ! runuser -u libvirt-qemu -- test -r /dev/kvm -a -w /dev/kvm; then
    # /dev/kvm exists but the guests' user cannot open it (mode 0600 root: the case on the CI
    # machines, where nested KVM would hang guests anyway). libvirt 9 then finds its cached qemu
    # capabilities "outdated" on every call and re-probes qemu (~60 s per virsh define). So
    # libvirtd runs in a mount namespace where /dev/kvm is an unreadable file (libvirt sees no
    # KVM, caches that, and offers qemu/TCG domains only) and where /etc/libvirt is a copy whose
    # qemu.conf turns off the per-guest /dev namespace (it cannot replicate that bind mount).
    # Nothing of the host (/dev/kvm, /etc/libvirt) is changed.
    private=/var/run/libvirt/imgctl-private
    rm -rf "$private"
    mkdir -p "$private"
    : >"$private/no-kvm"
    chmod 000 "$private/no-kvm"
    cp -a /etc/libvirt "$private/etc"
    printf '\n# imgctl start-libvirt.sh: see the comment there\nnamespaces = []\n' >>"$private/etc/qemu.conf"
    unshare --mount --propagation private sh -c \
      'mount --bind "$1/no-kvm" /dev/kvm && mount --bind "$1/etc" /etc/libvirt && exec libvirtd -d' \
      sh "$private" 9>&-
  else
    libvirtd -d 9>&-
  fi
fi

for _ in $(seq 1 300); do
  if virsh -c "$URI" version >/dev/null 2>&1; then
    exit 0
  fi
  pgrep -x libvirtd >/dev/null || break
  sleep 0.1
done
echo "start-libvirt: libvirtd did not answer on $URI (see /var/log/libvirt/libvirtd.log)" >&2
exit 1
