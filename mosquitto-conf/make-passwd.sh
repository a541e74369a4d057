#!/usr/bin/env bash
# Usage: mosquitto-conf/make-passwd.sh OUT
#
# Creates the Mosquitto password file OUT (hashed with mosquitto_passwd, PBKDF2-
# SHA512) from mosquitto-conf/dev-accounts, the development/test accounts. OUT is
# replaced atomically, so running this twice, or while a broker reads OUT, is safe.
#
# Permissions: OUT is created 0600 (owner only). The hashes are salted, but a
# world-readable password file still invites offline guessing, and Mosquitto
# releases after 2.0.11 warn about one. A missing parent directory is created
# 0700 for the same reason.
set -euo pipefail

die() { echo "make-passwd: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT"
out=$1
accounts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/dev-accounts"
[ -r "$accounts" ] || die "cannot read $accounts"

passwd_tool=$(command -v mosquitto_passwd || true)
[ -n "$passwd_tool" ] \
  || die "mosquitto_passwd not found: apt-get install mosquitto (it ships the tool)"

umask 077
out_dir=$(dirname "$out")
mkdir -p "$out_dir"
tmp=$(mktemp "$out_dir/.passwd.XXXXXX")
trap 'rm -f "$tmp"' EXIT

# -c on the first account truncates the temp file; -b takes the password from the
# command line (acceptable for throwaway dev passwords, not for real ones: they
# would show in `ps`).
first=1
count=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  user=${line%%:*}
  password=${line#*:}
  [ "$user" != "$line" ] && [ -n "$user" ] && [ -n "$password" ] \
    || die "$accounts: expected user:password, got '$line'"
  if [ $first -eq 1 ]; then
    "$passwd_tool" -c -b "$tmp" "$user" "$password" >/dev/null
    first=0
  else
    "$passwd_tool" -b "$tmp" "$user" "$password" >/dev/null
  fi
  count=$((count + 1))
done <"$accounts"
[ $count -gt 0 ] || die "$accounts defines no account"

chmod 0600 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
