#!/bin/sh
# Custom script set "web": the virtual host serving /srv/data/www (on the data disk).
set -eu
. "$IMAGE_STORE/common/functions.sh"

server_name=$(config_get server_name "$(config_get HOSTNAME "$VM_NAME")")
admin_email=$(config_get admin_email webmaster@example.com)
http_port=$(config_get http_port 80)

# Values end up in an Apache config file: refuse anything that could break out of a directive.
for value in "$server_name" "$admin_email" "$http_port"; do
  case $value in
    *[!A-Za-z0-9@._+-]*) die "refusing unsafe value '$value' for the virtual host" ;;
  esac
done

write_file "$(target_path /etc/httpd/conf.d/imgctl-site.conf)" 0644 <<SITE
# written by imgctl (custom_scripts/web/10-vhost.sh of $IMAGE_NAME) for $VM_NAME
<VirtualHost *:$http_port>
    ServerName $server_name
    ServerAdmin $admin_email
    DocumentRoot /srv/data/www
    ErrorLog /srv/data/logs/error.log
    CustomLog /srv/data/logs/access.log combined
    <Directory /srv/data/www>
        Require all granted
    </Directory>
</VirtualHost>
SITE

mkdir -p "$(target_path /srv/data/www)" "$(target_path /srv/data/logs)"
index=$(target_path /srv/data/www/index.html)
# The data disk is preserved across updates: never overwrite a site that is already there.
[ -e "$index" ] || printf '<h1>%s</h1>\n' "$server_name" | write_file "$index" 0644

if [ "$TARGET_ROOT" = / ] && command -v apachectl >/dev/null 2>&1; then
  apachectl configtest || die "httpd rejects the new configuration"
  systemctl try-reload-or-restart httpd.service || die "httpd did not reload"
fi
