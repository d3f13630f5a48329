#!/bin/sh
# Provisioning of the web appliance, run once the disks are in place (on the machine itself, or
# against a mounted root given as TARGET_ROOT). Reads the plan's values from VM_CONFIG and
# IMAGE_CONFIG (files of NAME=VALUE lines, read by config_get, never sourced) and writes the
# per-machine configuration httpd and chrony need. The custom script sets `base` and `web` run
# after it. Environment: IMAGE_STORE, IMAGE_NAME, VM_NAME, VM_CONFIG, IMAGE_CONFIG, LOG_FILE.
set -eu
. "$IMAGE_STORE/common/functions.sh"

http_port=$(config_get http_port 80)
workers=$(config_get workers 4)
ntp_server=$(config_get ntp_server pool.ntp.org)
db_password=$(config_get db_password '')

case $http_port in
  '' | *[!0-9]*) die "http_port must be a port number, got '$http_port'" ;;
esac
[ "$http_port" -ge 1 ] && [ "$http_port" -le 65535 ] || die "http_port $http_port is out of range"
case $workers in
  '' | *[!0-9]* | 0) die "workers must be a positive integer, got '$workers'" ;;
esac
[ -n "$db_password" ] || die "db_password is not set: give it in the system's parameters or with --set db_password=…"

log "provisioning $VM_NAME from $IMAGE_NAME: port $http_port, $workers workers, ntp $ntp_server"

# The application's database password, alone in its file (no quoting to get wrong), readable
# by root and the apache group only.
printf '%s\n' "$db_password" | write_file "$(target_path /etc/web-appliance/db_password)" 0640
if [ "$TARGET_ROOT" = / ] && getent group apache >/dev/null 2>&1; then
  chgrp apache /etc/web-appliance/db_password
fi

httpd_conf=$(target_path /etc/httpd/conf/httpd.conf)
if [ -f "$httpd_conf" ]; then
  sed "s/^Listen .*/Listen $http_port/" "$httpd_conf" | write_file "$httpd_conf" 0644
else
  log "no $httpd_conf: is httpd installed? leaving Listen alone"
fi

write_file "$(target_path /etc/httpd/conf.modules.d/10-imgctl-workers.conf)" 0644 <<MPM
# written by imgctl provision.sh of $IMAGE_NAME
<IfModule mpm_event_module>
    ServerLimit $workers
    ThreadsPerChild 25
    MaxRequestWorkers $((workers * 25))
</IfModule>
MPM

write_file "$(target_path /etc/chrony.d/imgctl.conf)" 0644 <<CHRONY
# written by imgctl provision.sh of $IMAGE_NAME
server $ntp_server iburst
CHRONY

# Only on the running machine: SELinux port label, then reload what changed.
if [ "$TARGET_ROOT" = / ]; then
  if [ "$http_port" != 80 ] && [ "$http_port" != 443 ] && command -v semanage >/dev/null 2>&1; then
    semanage port -a -t http_port_t -p tcp "$http_port" 2>/dev/null ||
      semanage port -m -t http_port_t -p tcp "$http_port"
  fi
  if command -v systemctl >/dev/null 2>&1; then
    systemctl try-restart chronyd.service || log "chronyd did not restart"
  fi
fi
log "provision.sh done"
