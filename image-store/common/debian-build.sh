# Helpers for build.sh recipes that make a system from Debian packages, without root
# (images/tiny-linux/build.sh, ramdisk/build.sh):
#   . "$HERE/../../common/debian-build.sh"
# bash. They keep what they download and extract in $CACHE_DIR (which must be set), so a
# rebuild downloads nothing; delete it to pick up newer packages. Needs apt-get, dpkg and kmod.

# fetch_deb PACKAGE: the path of PACKAGE's .deb in $CACHE_DIR/debs/, downloaded once
# (atomically) with apt-get download.
fetch_deb() {
  local package=$1 found tmp
  mkdir -p "$CACHE_DIR/debs"
  found=$(find "$CACHE_DIR/debs" -maxdepth 1 -name "${package}_*.deb" | sort | tail -n1)
  if [ -z "$found" ]; then
    echo "downloading $package" >&2
    tmp=$(mktemp -d "$CACHE_DIR/debs/.download.XXXXXX")
    (cd "$tmp" && apt-get download -q "$package" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    found=$(find "$tmp" -maxdepth 1 -name "${package}_*.deb" | head -n1)
    [ -n "$found" ] || { echo "apt-get download $package failed" >&2; return 1; }
    mv "$found" "$CACHE_DIR/debs/"
    rm -rf "$tmp"
    found="$CACHE_DIR/debs/$(basename "$found")"
  fi
  echo "$found"
}

# kernel_package: the kernel package linux-image-amd64 points at now
# (linux-image-6.1.0-NN-amd64); the newest one cached when apt knows none (offline).
kernel_package() {
  local package
  package=$(apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
  if [ -z "$package" ]; then
    package=$(find "$CACHE_DIR/debs" -maxdepth 1 -name 'linux-image-*-amd64_*.deb' -printf '%f\n' 2>/dev/null |
      sort -V | tail -n1 | cut -d_ -f1)
  fi
  [ -n "$package" ] || { echo "cannot tell which kernel package to use (apt-get update?)" >&2; return 1; }
  echo "$package"
}

# kernel_with_modules DEB MODULE...: a directory of $CACHE_DIR holding the kernel of the package
# DEB (vmlinuz), its version (version) and the modules named with their dependencies (modules/,
# modules/load-order: the order to insmod them in, from modprobe --show-depends). Extracted once
# per package and module list: dpkg -x of a whole kernel takes seconds, the pieces used are small.
kernel_with_modules() {
  local deb=$1 key dir work kver staged module path name
  shift
  key=$(printf '%s\n' "$@" | sha256sum | cut -c1-12)
  dir="$CACHE_DIR/$(basename "$deb" .deb)-$key"
  if [ ! -d "$dir" ]; then
    echo "extracting $(basename "$deb")" >&2
    work=$(mktemp -d "$CACHE_DIR/.kernel.XXXXXX")
    dpkg -x "$deb" "$work/kernel"
    kver=$(basename "$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
    depmod -b "$work/kernel" "$kver"
    staged="$work/staged"
    mkdir -p "$staged/modules"
    cp "$work/kernel/boot/vmlinuz-$kver" "$staged/vmlinuz"
    echo "$kver" >"$staged/version"
    : >"$staged/modules/load-order"
    for module in "$@"; do
      modprobe -d "$work/kernel" -S "$kver" --show-depends "$module" |
        sed -n 's/^insmod \([^ ]*\).*/\1/p' | while read -r path; do
        name=$(basename "$path")
        if ! grep -qxF "$name" "$staged/modules/load-order"; then
          cp "$path" "$staged/modules/$name"
          echo "$name" >>"$staged/modules/load-order"
        fi
      done
    done
    mv -T "$staged" "$dir"
    rm -rf "$work"
  fi
  echo "$dir"
}
