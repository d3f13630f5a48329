#!/usr/bin/env bash
# npm run demo:netboot: an empty machine network-boots and comes up provisioned
# (docs/bare-metal.md). On a copy of the example store: the tiny appliance and the provisioning
# ramdisk are built, system tiny01 gets netboot=true, `imgctl serve` listens on a bridge of its
# own where dnsmasq points iPXE at it, and a libvirt VM with a blank disk boots from the network:
# iPXE → the ramdisk → the appliance written to /dev/vda → a reboot into it.
#
# Needs root (a bridge, dnsmasq, libvirt qemu:///system). Everything it makes — the VM, the
# bridge imgdemo0 (10.78.0.0/24), dnsmasq, the server, its temporary directory — is removed on
# exit; image-store/ is never modified.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BRIDGE=imgdemo0
SUBNET=10.78.0
HOST_IP=$SUBNET.1
VM=demo-netboot01
SYSTEM=tiny01
MAC=52:54:00:00:00:01 # tiny01's interface in image-store/systems/tiny01.yaml
CACHE=$ROOT/node_modules/.cache/imgctl-build
VIRSH=(virsh --connect qemu:///system)

say() { printf '\n%s\n' "$*" >&2; }
die() {
  printf 'demo-netboot: %s\n' "$*" >&2
  exit 1
}
imgctl() {
  printf '==> imgctl %s\n' "$*" >&2
  "$ROOT/node_modules/.bin/imgctl" "$@"
}

[ "$(id -u)" -eq 0 ] || die 'run it as root: it makes a bridge, runs dnsmasq and a libvirt VM'
ip link show "$BRIDGE" >/dev/null 2>&1 && die "the interface $BRIDGE exists already (another demo running?)"
ip -4 -o addr show | grep -q " $SUBNET\." && die "an interface of this host has an address in $SUBNET.0/24"
[ -d "$ROOT/node_modules" ] || (cd "$ROOT" && npm ci --no-audit --no-fund) >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgctl-demo-netboot.XXXXXX")
STORE=$WORK/image-store
PIDS=()
cleanup() {
  set +e
  if [ -n "${VM_MADE:-}" ]; then
    "${VIRSH[@]}" destroy "$VM" >/dev/null 2>&1 || true
    "${VIRSH[@]}" undefine "$VM" >/dev/null 2>&1 || true
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [ -n "${BRIDGE_MADE:-}" ] && ip link del "$BRIDGE"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE PATTERN SECONDS: until a line of FILE matches PATTERN (grep -E).
wait_for() {
  local i
  for ((i = 0; i < $3 * 2; i++)); do
    grep -aqE "$2" "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  die "no '$2' in $1 within $3 s; its end: $(tail -c 2000 "$1" 2>/dev/null)"
}

say 'The Debian packages it needs (scripts/setup-test-env.sh, as npm test does: dnsmasq, the iPXE
ROMs, qemu, libvirt, and what the recipes use), and libvirtd (scripts/start-libvirt.sh).'
bash "$ROOT/scripts/setup-test-env.sh"
bash "$ROOT/scripts/start-libvirt.sh"
"${VIRSH[@]}" dominfo "$VM" >/dev/null 2>&1 && die "a libvirt domain $VM exists already"

say "Copying the example store to $STORE."
mkdir -p "$STORE"
tar -C "$ROOT/image-store" --exclude=./.blobs --exclude=./.state -cf - . | tar -C "$STORE" -xf -
export IMGCTL_STORE=$STORE IMGCTL_BUILD_CACHE=$CACHE
# qemu runs as libvirt-qemu: the VM's disk and console log must be reachable
chmod 755 "$WORK"

say "Building the tiny appliance, then the provisioning ramdisk (a Debian kernel, busybox and the
self-contained agent, built here into $WORK/dist). Downloads are cached in $CACHE."
imgctl build tiny-linux
node "$ROOT/scripts/build.mjs" --outdir "$WORK/dist" --only imgagent-linux-x64 >&2
IMGCTL_AGENT_EXECUTABLE=$WORK/dist/imgagent-linux-x64 imgctl ramdisk build

say "System $SYSTEM: the disk to write, and network boot on for its next boot. The machine is
known by the MAC of its interface ($MAC)."
imgctl system set "$SYSTEM" target_disk=/dev/vda netboot=true
imgctl system show "$SYSTEM"

say "A bridge of its own, $BRIDGE ($HOST_IP/24), and the server listening on that address with a
write token (without one it could not clear netboot after the run, and answers local boot)."
ip link add "$BRIDGE" type bridge && BRIDGE_MADE=1
ip addr add "$HOST_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
node -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("hex") + "\n")' >"$WORK/token"
chmod 600 "$WORK/token"
printf '==> imgctl serve --listen %s:0 --write-token-file %s &\n' "$HOST_IP" "$WORK/token" >&2
"$ROOT/node_modules/.bin/imgctl" serve --listen "$HOST_IP:0" --write-token-file "$WORK/token" \
  2>"$WORK/serve.log" &
PIDS+=($!)
wait_for "$WORK/serve.log" 'listening on http' 30
URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/serve.log")
printf '    listening on %s\n' "$URL" >&2

say "dnsmasq on $BRIDGE: addresses from $SUBNET.50-150, and to iPXE (DHCP option 175) the boot
file $URL/v1/boot/ipxe. The script there asks again with the machine's MAC:"
printf '==> dnsmasq --interface=%s --dhcp-range=%s.50,%s.150,12h --dhcp-match=set:ipxe,175 --dhcp-boot=tag:ipxe,%s/v1/boot/ipxe …\n' \
  "$BRIDGE" "$SUBNET" "$SUBNET" "$URL" >&2
dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --log-facility=- --log-dhcp \
  --interface="$BRIDGE" --bind-interfaces --dhcp-range="$SUBNET.50,$SUBNET.150,12h" \
  --dhcp-leasefile="$WORK/leases" --pid-file="$WORK/dnsmasq.pid" \
  --dhcp-match=set:ipxe,175 --dhcp-boot="tag:ipxe,$URL/v1/boot/ipxe" \
  >"$WORK/dnsmasq.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/dnsmasq.log" 'DHCP, IP range' 10
node -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))' "$URL/v1/boot/ipxe"

say "The machine: 1 GiB of memory, a blank 256 MiB disk, one NIC on $BRIDGE, booting from the
network first, then from its disk — a bare server's boot order."
truncate -s 256M "$WORK/$VM.raw"
cat >"$WORK/$VM.xml" <<XML
<domain type='qemu'>
  <name>$VM</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='network'/><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='$WORK/$VM.raw'/><target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='$MAC'/><source bridge='$BRIDGE'/><model type='virtio'/>
    </interface>
    <serial type='file'><source path='$WORK/$VM.serial.log'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
XML
VM_MADE=1
"${VIRSH[@]}" define "$WORK/$VM.xml" >/dev/null
printf '==> virsh start %s\n' "$VM" >&2
"${VIRSH[@]}" start "$VM" >/dev/null
STARTED=$SECONDS

say "Waiting for its iPXE (qemu's ROM) to fetch the ramdisk..."
wait_for "$WORK/$VM.serial.log" 'IMGCTL-RAMDISK' 300
grep -a "boot $MAC" "$WORK/serve.log" >&2
say 'The ramdisk runs: it writes the appliance over /dev/vda (not its data disk: a network boot
writes target_disk only) and reboots into it (software emulation: a minute or two)...'
wait_for "$WORK/$VM.serial.log" 'IMGCTL-APPLIANCE hostname=' 600
say "Up after $((SECONDS - STARTED)) s. What the machine's serial console said:"
grep -a -E 'IMGCTL-RAMDISK|imgagent: |IMGCTL-APPLIANCE' "$WORK/$VM.serial.log"

say 'What dnsmasq handed out, and the requests the server answered for the machine:'
grep -E 'DHCPACK|option: 67' "$WORK/dnsmasq.log" >&2 || true
grep -aE ' boot |/v1/(boot|plan|blobs|events)|netboot' "$WORK/serve.log" >&2

say "The phases the ramdisk's agent posted, and netboot cleared by its 'done' (the next network
boot of this machine goes to its disk):"
imgctl status
imgctl status --system "$SYSTEM"
grep -n 'netboot' "$STORE/systems/$SYSTEM.yaml"
say "Done in $SECONDS s. The VM, the bridge, dnsmasq, the server and the temporary store are removed."
