#!/bin/sh
# Custom script set "web": open the HTTP port in firewalld's public zone.
set -eu
. "$IMAGE_STORE/common/functions.sh"

http_port=$(config_get http_port 80)
case $http_port in
  '' | *[!0-9]*) die "http_port must be a port number, got '$http_port'" ;;
esac

if [ "$TARGET_ROOT" != / ]; then
  # Not the running machine: firewalld tools act on the host they run on, so leave a service
  # definition in the target and let the machine's first boot (or the kickstart) enable it.
  write_file "$(target_path /etc/firewalld/services/imgctl-web.xml)" 0644 <<XML
<?xml version="1.0" encoding="utf-8"?>
<service>
  <short>imgctl web</short>
  <description>HTTP port of the imgctl web appliance.</description>
  <port protocol="tcp" port="$http_port"/>
</service>
XML
  log "wrote the firewalld service imgctl-web for port $http_port; enable it on the machine"
  exit 0
fi

if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  firewall-cmd --permanent --zone=public --add-port="$http_port/tcp"
  firewall-cmd --reload
elif command -v firewall-offline-cmd >/dev/null 2>&1; then
  firewall-offline-cmd --zone=public --add-port="$http_port/tcp"
else
  log "no firewalld on $VM_NAME: port $http_port/tcp left as it is"
fi
log "port $http_port/tcp open"
