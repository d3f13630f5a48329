#!/usr/bin/env bash
# Installs the Debian packages the tests need, when they are missing. The one list of them is
# here; later issues add qemu, libvirt, sshd and friends. Needs root to install; without root
# it only says what is missing.
set -euo pipefail

# package → a command it provides, to tell whether it is already there
declare -A PACKAGES=(
  [git]=git
)

missing=()
for package in "${!PACKAGES[@]}"; do
  command -v "${PACKAGES[$package]}" >/dev/null 2>&1 || missing+=("$package")
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
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
