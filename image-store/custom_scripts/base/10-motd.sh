#!/bin/sh
# Shared customization set "base": a message of the day naming the image and the machine.
set -eu
. "$IMAGE_STORE/common/functions.sh"

hostname=$(config_get HOSTNAME "${VM_NAME:-unknown}")
write_file "$(target_path /etc/motd)" 0644 <<MOTD
$hostname — provisioned by imgctl from image ${IMAGE_NAME:-unknown}
Changes made by hand may be overwritten the next time this machine is provisioned.
MOTD
