#!/usr/bin/env bash
# npm run demo: a narrated walk through the example store (image-store/), on a copy in a temp
# directory so the store in the repository is never modified. Each step prints the command it
# runs as a `==> imgctl …` header on stderr; the command's own output follows on stdout.
#
# Later issues extend it (build the tiny appliance, serve the store, imgagent --virt): add a
# function below and call it from main.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgctl-demo.XXXXXX")
STORE=$WORK/image-store
DEMO_VM=demo-tiny01
DEMO_BRIDGE=imgctl-demo0
SERVER_PID=
cleanup() {
  if [ -n "${VM_MADE:-}" ]; then
    virsh --connect qemu:///system destroy "$DEMO_VM" >/dev/null 2>&1 || true
    virsh --connect qemu:///system undefine "$DEMO_VM" >/dev/null 2>&1 || true
  fi
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -n "${BRIDGE_MADE:-}" ] && ip link del "$DEMO_BRIDGE" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n%s\n' "$*" >&2; }
die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

# imgctl ARGS…: prints the header, then runs the CLI from source (no build step).
imgctl() {
  printf '==> imgctl %s\n' "$*" >&2
  "$ROOT/node_modules/.bin/imgctl" "$@"
}

# imgagent ARGS…: the agent, as on a target host, with the header.
imgagent() {
  printf '==> imgagent %s\n' "$*" >&2
  "$ROOT/node_modules/.bin/imgagent" "$@"
}

# expect_exit CODE ARGS…: runs imgctl ARGS and checks it fails with exit CODE.
expect_exit() {
  local want=$1 got=0
  shift
  imgctl "$@" || got=$?
  [ "$got" -eq "$want" ] || die "expected exit $want from 'imgctl $*', got $got"
  printf '    (exit %s, as expected)\n' "$got" >&2
}

check_node() {
  command -v node >/dev/null || die 'node is not installed: Node >= 20.19 is needed'
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
    die "Node >= 20.19 is needed, this is $(node --version)"
  if [ ! -d "$ROOT/node_modules" ]; then
    say 'node_modules is missing: running npm ci'
    (cd "$ROOT" && npm ci --no-audit --no-fund) >&2
  fi
}

# The Debian packages of the build and the VM, from the one list the tests use
# (scripts/setup-test-env.sh). Without root it says what is missing, and the parts that need
# those packages are skipped.
install_packages() {
  say 'Checking the Debian packages the appliance build and the VM need (scripts/setup-test-env.sh, as npm test does).'
  if bash "$ROOT/scripts/setup-test-env.sh"; then
    PACKAGES_OK=1
  elif [ "$(id -u)" -eq 0 ]; then
    die 'installing the Debian packages failed (above)'
  else
    say 'Without them the appliance build and the VM are skipped; run the demo as root to have them installed.'
  fi
}

copy_store() {
  say "Copying the example store to $STORE (disks and state are never copied)."
  mkdir -p "$STORE"
  tar -C "$ROOT/image-store" --exclude=./.blobs --exclude=./.state -cf - . | tar -C "$STORE" -xf -
  # The store is found through $IMGCTL_STORE from here on (--store DIR works too).
  export IMGCTL_STORE=$STORE
  if command -v git >/dev/null; then
    git -C "$STORE" init -q
    git -C "$STORE" add -A
    git -C "$STORE" -c user.name=demo -c user.email=demo@localhost commit -q -m 'example store'
  fi
}

look_around() {
  say 'Every file of the store is checked against its schema; a problem names file:line:col.'
  imgctl image validate
  say 'The images, their records, and the target systems.'
  imgctl image list
  imgctl image show web
  imgctl record list web
  imgctl system list
  say 'A system is found by name, by MAC address or by hostname (what the agent sends).'
  imgctl system show 52:54:00:12:34:56
}

plan_and_render() {
  say 'The plan: image defaults < record < system < --set, resolved. Secrets are redacted.'
  imgctl plan web --system web01 --set db_password=demo-only-secret
  say 'The large record and a --set override (devices, disks and parameters only; web01 sets workers itself, and a system wins over a record).'
  imgctl plan web --system web01 --record large --set http_port=8080 --json |
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const p = JSON.parse(s);
      console.log(JSON.stringify({ devices: p.devices, disks: p.disks.map((d) => ({ id: d.id, size: d.size })), parameters: p.parameters, parameter_sources: p.parameter_sources }, null, 2));
    })'
  say 'The image fixes its time zone: changing it is refused (exit 3, validation).'
  expect_exit 3 plan web --system web01 --set timezone=Europe/Paris
  say "The kickstart rendered for web01: its static address, hostname and SSH key."
  imgctl plan web --system web01 --render kickstart
}

copy_and_edit() {
  say "'image copy' is create-like: same files, new name, revision 1, parent set."
  imgctl image copy web web-staging
  say "'image set' edits the descriptor in place, keeping its comments and layout."
  imgctl image set web-staging devices.memory=2GiB labels.tier=staging
  imgctl image validate web-staging
  if command -v git >/dev/null; then
    say 'What changed in the store, as git sees it:'
    git -C "$STORE" add -A
    printf '==> git diff --cached --stat\n' >&2
    git -C "$STORE" --no-pager diff --cached --stat
    printf '==> git diff --no-index images/web/image.yaml images/web-staging/image.yaml\n' >&2
    git -C "$STORE" --no-pager diff --no-index -- images/web/image.yaml images/web-staging/image.yaml || true
  fi
}

build_appliance() {
  if [ -z "${PACKAGES_OK:-}" ]; then
    say 'Skipping the appliance build: its Debian packages are missing (above).'
    return 0
  fi
  say 'Building the tiny appliance (a Debian kernel and a busybox initramfs) from its recipe; the
downloads are cached in node_modules/.cache/imgctl-build, so a second run takes seconds.'
  IMGCTL_BUILD_CACHE="$ROOT/node_modules/.cache/imgctl-build" imgctl build tiny-linux
  imgctl image show tiny-linux
}

serve_store() {
  say 'Serving the store on 127.0.0.1 (a free port), accepting the agent events with a write token.'
  node -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("hex") + "\n")' >"$WORK/token"
  chmod 600 "$WORK/token"
  printf '==> imgctl serve --listen 127.0.0.1:0 --write-token-file %s &\n' "$WORK/token" >&2
  "$ROOT/node_modules/.bin/imgctl" serve --listen 127.0.0.1:0 --write-token-file "$WORK/token" \
    2>"$WORK/serve.log" &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    SERVER_URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/serve.log")
    [ -n "$SERVER_URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "imgctl serve exited: $(cat "$WORK/serve.log")"
    sleep 0.1
  done
  [ -n "$SERVER_URL" ] || die 'imgctl serve did not start'
  printf '    listening on %s\n' "$SERVER_URL" >&2
}

provision_vm() {
  if [ "$(id -u)" -ne 0 ] || [ -z "${PACKAGES_OK:-}" ]; then
    say 'Skipping imgagent --virt: it needs root here (libvirt qemu:///system, a host bridge).'
    return 0
  fi
  say 'Starting libvirtd and virtlogd if they are not running (scripts/start-libvirt.sh, as the tests do).'
  bash "$ROOT/scripts/start-libvirt.sh"
  # The VM's nic goes on a host bridge of its own (no libvirt network, no DHCP needed).
  ip link add "$DEMO_BRIDGE" type bridge && BRIDGE_MADE=1
  ip link set "$DEMO_BRIDGE" up
  # qemu runs as libvirt-qemu: the disks must be reachable through world-traversable dirs.
  chmod 755 "$WORK"
  mkdir -p "$WORK/vms" "$WORK/cache" "$WORK/logs"

  say 'Releasing the appliance: its revision frozen as tiny-linux@REV on channel stable, and tiny01
made to follow the channel (one reviewable change of one file each).'
  imgctl release create tiny-linux --channel stable
  imgctl system set tiny01 image=tiny-linux@stable

  say "The agent, as on a hypervisor host: the plan for system tiny01, the host check, the disks pulled
into the cache and verified, a qcow2 overlay per VM, a NoCloud seed, provision.sh, the domain
defined and started."
  imgagent --server "$SERVER_URL" --token-file "$WORK/token" --list images
  VM_MADE=1
  imgagent --server "$SERVER_URL" --token-file "$WORK/token" \
    --virt --system tiny01 --virt-name "$DEMO_VM" --virt-type qemu --nogfx \
    --virt-bridge "$DEMO_BRIDGE" --virt-path "$WORK/vms" --cache-dir "$WORK/cache" --log-dir "$WORK/logs"

  say "Waiting for the VM's serial console (software emulation: about 20 s)..."
  show_report
  say 'Provisioning status, from the events the agent sent to the server:'
  imgctl status
  imgctl status --system tiny01
}

# show_report: waits for the appliance's report line on the demo VM's serial console (the log
# starts afresh at each boot), prints it and the greeting after it.
show_report() {
  local serial=$WORK/vms/$DEMO_VM.serial.log line=
  for _ in $(seq 1 1800); do
    line=$(grep -a -A1 '^IMGCTL-APPLIANCE ' "$serial" 2>/dev/null || true)
    [ "$(printf '%s\n' "$line" | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  [ -n "$line" ] || die "no report on the VM's serial console within 180 s: $(tail -5 "$serial" 2>/dev/null)"
  printf '==> grep -A1 IMGCTL-APPLIANCE %s\n' "$serial" >&2
  printf '%s\n' "$line"
}

update_vm() {
  [ -n "${VM_MADE:-}" ] || return 0
  say 'Day two: a second release (another greeting) moves channel stable; tiny01 is now behind it.'
  imgctl image set tiny-linux 'parameters.greeting.default=hello from the second release'
  imgctl release create tiny-linux --channel stable
  imgctl status --outdated
  say "The agent updates the VM to what stable points at: a new overlay on the cached disk, a new
seed, the same data disk; the domain is redefined and booted, and the image's health check (its
report line on the serial console) decides whether it stays or is rolled back."
  imgagent --server "$SERVER_URL" --token-file "$WORK/token" \
    --update --virt-name "$DEMO_VM" --virt-type qemu --nogfx \
    --virt-bridge "$DEMO_BRIDGE" --cache-dir "$WORK/cache" --log-dir "$WORK/logs"
  say 'The data disk was kept: the appliance counts its boots there (boots=2), and says the new greeting.'
  show_report
  imgctl image history tiny-linux
  imgctl status --outdated
}

main() {
  check_node
  install_packages
  copy_store
  look_around
  plan_and_render
  copy_and_edit
  build_appliance
  serve_store
  provision_vm
  update_vm
  say 'Done. The VM, its disks, the server and the temporary store are removed; image-store/ is unchanged.'
}

main "$@"
