#!/bin/sh
# Shared customization set "base": key-only SSH logins. A drop-in file, so the distribution's
# sshd_config stays untouched (OpenSSH >= 8.2 reads sshd_config.d/ on Debian and EL 9).
set -eu
. "$IMAGE_STORE/common/functions.sh"

write_file "$(target_path /etc/ssh/sshd_config.d/50-imgctl.conf)" 0600 <<'SSHD'
# written by imgctl (custom_scripts/base/20-sshd.sh)
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
SSHD
