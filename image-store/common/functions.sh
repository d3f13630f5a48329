# Helpers for provision.sh and custom scripts:
#   . "$IMAGE_STORE/common/functions.sh"
# POSIX sh; safe under `set -eu`. Nothing here runs on its own except reading defs.sh.

# shellcheck source=defs.sh
. "${IMAGE_STORE:?IMAGE_STORE is not set}/common/defs.sh"

# log MESSAGE...: a timestamped line in $LOG_FILE (stderr when unset).
log() {
  printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"${LOG_FILE:-/dev/stderr}"
}

# die MESSAGE...: logs the error, also on stderr, and exits 1.
die() {
  log "error: $*"
  [ -z "${LOG_FILE:-}" ] || printf 'error: %s\n' "$*" >&2
  exit 1
}

# require_cmd CMD...: dies unless every command is on PATH.
require_cmd() {
  for _cmd in "$@"; do
    command -v "$_cmd" >/dev/null 2>&1 || die "required command not found: $_cmd"
  done
}

# config_get NAME [DEFAULT]: the value of NAME in $VM_CONFIG, else in $IMAGE_CONFIG, else DEFAULT
# (dies when there is none). Both are files of NAME=VALUE lines (VALUE plain, 'single' or
# "double" quoted); they are read, never sourced, so a value cannot run code.
config_get() {
  _name=$1
  case $_name in
    '' | [0-9]* | *[!A-Za-z0-9_]*) die "config_get: invalid name '$_name'" ;;
  esac
  for _file in "${VM_CONFIG:-}" "${IMAGE_CONFIG:-}"; do
    [ -n "$_file" ] && [ -r "$_file" ] || continue
    if _line=$(grep -E "^(export )?${_name}=" "$_file" | tail -n 1) && [ -n "$_line" ]; then
      _value=${_line#*=}
      case $_value in
        \'*\') _value=$(printf '%s' "$_value" | sed -e "s/^'//" -e "s/'\$//" -e "s/'\"'\"'/'/g" -e "s/'\\\\''/'/g") ;;
        \"*\") _value=$(printf '%s' "$_value" | sed -e 's/^"//' -e 's/"$//') ;;
      esac
      printf '%s\n' "$_value"
      return 0
    fi
  done
  [ $# -ge 2 ] || die "configuration value $_name is not set (VM_CONFIG=${VM_CONFIG:-unset}, IMAGE_CONFIG=${IMAGE_CONFIG:-unset})"
  printf '%s\n' "$2"
}

# target_path PATH: PATH inside the filesystem being configured ($TARGET_ROOT).
target_path() {
  printf '%s/%s\n' "${TARGET_ROOT%/}" "${1#/}"
}

# write_file PATH MODE < CONTENT: replaces PATH atomically (temp file + rename), creating its
# directory; a reader never sees a half-written file.
write_file() {
  _dest=$1
  _mode=$2
  mkdir -p "$(dirname "$_dest")"
  _tmp=$(mktemp "$_dest.XXXXXX")
  if cat >"$_tmp" && chmod "$_mode" "$_tmp" && mv -f "$_tmp" "$_dest"; then
    log "wrote $_dest"
  else
    rm -f "$_tmp"
    die "could not write $_dest"
  fi
}

# run_parts DIR: runs every NN-*.sh in DIR in name order with sh, stopping at the first failure.
run_parts() {
  [ -d "$1" ] || die "run_parts: no directory $1"
  for _script in "$1"/[0-9][0-9]-*.sh; do
    [ -e "$_script" ] || continue
    log "running $_script"
    sh "$_script" || die "$_script failed"
  done
}
