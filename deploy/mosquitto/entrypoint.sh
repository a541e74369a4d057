#!/bin/sh
# Entrypoint of the docker-compose `broker` service (eclipse-mosquitto:2, Alpine: no
# bash, so this is POSIX sh). At every start, before Mosquitto runs:
#   1. hashes mosquitto-conf/dev-accounts into $conf_dir/passwd with mosquitto_passwd,
#      exactly as mosquitto-conf/make-passwd.sh does on a development machine (that
#      script needs bash, which the image does not have);
#   2. installs mosquitto-conf/acl as $conf_dir/acl;
#   3. makes both 0600 and owned by the broker user (uid 1883), and gives it the data
#      directory, then execs the command (mosquitto -c /mosquitto/config/mosquitto.conf).
#
# Why: Mosquitto starts as root, reads mosquitto.conf, then drops to the `mosquitto`
# user (uid 1883) *before* it opens password_file, acl_file and the persistence
# database. Files it cannot read make it exit; world-readable password files draw a
# warning from Mosquitto releases after 2.0.11. Generating the files inside the
# container means no `chown 1883:1883` on the host checkout (the lab's "attention
# permissions" step), and the repository files are mounted read-only and never modified.
#
# Paths (defaults are the container's; tests/compose.rs overrides them to run this
# script on a temp dir):
#   ARNG_BROKER_SRC       read-only mosquitto-conf/ mount  (default /arng/mosquitto-conf)
#   ARNG_BROKER_CONF_DIR  where passwd and acl go; must match password_file/acl_file in
#                         mosquitto.conf                    (default /mosquitto/config)
#   ARNG_BROKER_DATA_DIR  persistence_location              (default /mosquitto/data)
#   ARNG_BROKER_OWNER     owner of the generated files      (default 1883:1883)
set -eu

src=${ARNG_BROKER_SRC:-/arng/mosquitto-conf}
conf_dir=${ARNG_BROKER_CONF_DIR:-/mosquitto/config}
data_dir=${ARNG_BROKER_DATA_DIR:-/mosquitto/data}
owner=${ARNG_BROKER_OWNER:-1883:1883}

die() { echo "broker-entrypoint: $*" >&2; exit 1; }

[ -r "$src/dev-accounts" ] || die "cannot read $src/dev-accounts (is mosquitto-conf/ mounted?)"
[ -r "$src/acl" ] || die "cannot read $src/acl"
command -v mosquitto_passwd >/dev/null 2>&1 || die "mosquitto_passwd not found"

# The directories exist in the image (0755); created here only for a run outside
# it, before the umask so the broker user can traverse them.
mkdir -p "$conf_dir" "$data_dir"
umask 077
tmp=$(mktemp "$conf_dir/.passwd.XXXXXX")
trap 'rm -f "$tmp"' EXIT

count=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  user=${line%%:*}
  password=${line#*:}
  if [ "$user" = "$line" ] || [ -z "$user" ] || [ -z "$password" ]; then
    die "$src/dev-accounts: expected user:password, got '$line'"
  fi
  if [ $count -eq 0 ]; then
    mosquitto_passwd -c -b "$tmp" "$user" "$password" >/dev/null
  else
    mosquitto_passwd -b "$tmp" "$user" "$password" >/dev/null
  fi
  count=$((count + 1))
done <"$src/dev-accounts"
[ $count -gt 0 ] || die "$src/dev-accounts defines no account"

chmod 0600 "$tmp"
chown "$owner" "$tmp"
mv -f "$tmp" "$conf_dir/passwd"
trap - EXIT

cp "$src/acl" "$conf_dir/.acl.tmp"
chmod 0600 "$conf_dir/.acl.tmp"
chown "$owner" "$conf_dir/.acl.tmp"
mv -f "$conf_dir/.acl.tmp" "$conf_dir/acl"

chown -R "$owner" "$data_dir"
echo "broker-entrypoint: $count accounts hashed into $conf_dir/passwd, ACL installed" >&2

exec "$@"
