#!/bin/sh
# Runs after the disks are in place and the seed is attached. The appliance configures itself
# from its cloud-init NoCloud seed at boot, so there is nothing to change on its disks; this
# only records what was provisioned. Environment: IMAGE_STORE, IMAGE_NAME, VM_NAME, VM_CONFIG,
# IMAGE_CONFIG, LOG_FILE.
set -eu
. "$IMAGE_STORE/common/functions.sh"

hostname=$(config_get HOSTNAME "$VM_NAME")
stay_up=$(config_get stay_up false)
log "provisioned $VM_NAME (hostname $hostname) from $IMAGE_NAME; stay_up=$stay_up"
log "the appliance prints 'IMGCTL-APPLIANCE hostname=$hostname …' on its serial console when it boots"
