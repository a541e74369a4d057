#!/usr/bin/env bash
# Usage: scripts/broker-config.sh render SRC_CONF DIR PORTS [CERT_DIR]
#
# Renders a loopback copy of a project Mosquitto config (one of mosquitto-conf/*.conf,
# written for the eclipse-mosquitto:2 image) so it runs on this machine, for
# scripts/services.sh and the tests (tests/common/mosquitto.rs).
#   PORTS     one loopback port per active `listener` of SRC_CONF, comma-separated,
#             in the order the listeners appear: `PORT` for the single-listener
#             configs, `PORT,TLS_PORT,MTLS_PORT` for tls.conf (1883, 8883, 8884).
#             A count that does not match the listeners is an error, so no listener
#             is silently left on its container port.
#   CERT_DIR  where the TLS files are (scripts/gen-certs.sh writes them: ca.crt,
#             server.crt, server.key); required when SRC_CONF has cafile, capath,
#             certfile, keyfile or crlfile lines, which are pointed at
#             CERT_DIR/<same file name>. The files must exist.
# Writes:
#   DIR/mosquitto.conf  SRC_CONF with only these lines rewritten:
#       the n-th active `listener`      -> listener <n-th of PORTS> 127.0.0.1
#       persistence_location            -> DIR/data/
#       password_file                   -> DIR/passwd
#       acl_file                        -> DIR/acl
#       cafile, capath, certfile,
#       keyfile, crlfile, bridge_cafile,
#       bridge_capath, bridge_certfile,
#       bridge_keyfile                  -> CERT_DIR/<file name>
#       address, addresses (a bridge)   -> $ARNG_BRIDGE_ADDRESS (HOST:PORT), which
#                                          must then be set (bridge.conf)
#       log_dest (all of them)          -> one `log_dest file DIR/mosquitto.log`
#       user, pid_file                  -> removed
#     Every other line is kept verbatim, so tests exercise the real settings
#     (limits, persistence, max_qos under the listener, TLS options...). A key the
#     source lacks is appended, so the copy never points at /mosquitto/... paths.
#   DIR/passwd          from mosquitto-conf/dev-accounts (make-passwd.sh), 0600
#   DIR/acl             copy of mosquitto-conf/acl
#   DIR/data/           persistence directory (kept across renders)
# Idempotent: rendering again rewrites the same files and keeps DIR/data.
#
# Environment: ARNG_BRIDGE_ADDRESS, the central broker a bridge config (one with an
# `address` line, mosquitto-conf/bridge.conf) connects to, e.g. 127.0.0.1:18830.
#
# Running as root: Mosquitto started as root switches to the `mosquitto` user
# (or `nobody`) before it opens the password file, the ACL, the log and the
# persistence database, and that user can neither read the 0600 root-owned
# password file nor, usually, enter DIR (a 0700 temp dir or /root/...). Rather
# than chown files into a directory the process cannot traverse anyway, the
# rendered copy, and only it, says `user root` when this script runs as root: a
# throwaway loopback broker for development and tests, never the deployed config
# (the image keeps its default `user mosquitto`). Mosquitto then logs a warning
# about running as root, which is expected here.
set -euo pipefail

die() { echo "broker-config: $*" >&2; exit 1; }
usage() { die "usage: $0 render SRC_CONF DIR PORT[,PORT...] [CERT_DIR]"; }

[ $# -ge 1 ] || usage
cmd=$1
shift
[ "$cmd" = render ] || usage
[ $# -eq 3 ] || [ $# -eq 4 ] || usage
src=$1
dir=$2
ports=$3
certs=${4:-}
bridge_address=${ARNG_BRIDGE_ADDRESS:-}
case "$bridge_address" in
  *[[:space:]]*) die "ARNG_BRIDGE_ADDRESS must be one HOST:PORT, got '$bridge_address'" ;;
esac

[ -r "$src" ] || die "cannot read config $src"
IFS=, read -r -a port_list <<<"$ports"
case "$ports" in ,*|*,|*,,*) die "PORTS must be numbers separated by commas, got '$ports'" ;; esac
[ ${#port_list[@]} -ge 1 ] || die "PORTS is empty"
for port in "${port_list[@]}"; do
  case "$port" in
    ''|*[!0-9]*) die "PORTS must be numbers separated by commas, got '$ports'" ;;
  esac
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "port out of range: $port"
done
# Mosquitto splits option values on spaces: a path with blanks would be cut.
case "$dir" in
  *[[:space:]]*) die "DIR must not contain whitespace: '$dir'" ;;
esac
if [ -n "$certs" ]; then
  case "$certs" in
    *[[:space:]]*) die "CERT_DIR must not contain whitespace: '$certs'" ;;
  esac
  [ -d "$certs" ] || die "CERT_DIR $certs is not a directory (scripts/gen-certs.sh creates it)"
  certs="$(cd "$certs" && pwd)"
fi
command -v mosquitto_passwd >/dev/null 2>&1 \
  || die "mosquitto_passwd not found: apt-get install mosquitto (it ships the tool)"

conf_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../mosquitto-conf" && pwd)"
mkdir -p "$dir/data"
dir="$(cd "$dir" && pwd)"

run_as_root=0
[ "$(id -u)" -eq 0 ] && run_as_root=1

"$conf_dir/make-passwd.sh" "$dir/passwd"
cp "$conf_dir/acl" "$dir/acl.tmp"
chmod 0600 "$dir/acl.tmp"
mv -f "$dir/acl.tmp" "$dir/acl"

tmp="$dir/mosquitto.conf.tmp"
awk -v src="$src" -v dir="$dir" -v ports="$ports" -v certs="$certs" -v as_root="$run_as_root" \
  -v bridge_address="$bridge_address" '
  function emit_log() {
    if (!seen_log) print "log_dest file " dir "/mosquitto.log"
    seen_log = 1
  }
  function fail(msg) {
    printf "broker-config: %s: %s\n", src, msg > "/dev/stderr"
    failed = 1
    exit 1
  }
  BEGIN {
    nports = split(ports, port, ",")
    print "# Rendered by scripts/broker-config.sh from " src " for a loopback run."
    print "# Regenerated on every render: edit the source instead."
    print ""
  }
  # Comments and blank lines are kept as they are (commented-out listeners too).
  /^[[:space:]]*(#|$)/ { print; next }
  $1 == "listener" {
    listeners++
    if (listeners > nports)
      fail("more active listeners than ports given (" ports "): give one port per listener, in file order")
    print "listener " port[listeners] " 127.0.0.1"
    next
  }
  $1 == "persistence_location" { print "persistence_location " dir "/data/"; seen_persist = 1; next }
  $1 == "password_file"        { print "password_file " dir "/passwd"; seen_passwd = 1; next }
  $1 == "acl_file"             { print "acl_file " dir "/acl"; seen_acl = 1; next }
  # TLS files: same file name, in CERT_DIR.
  $1 == "cafile" || $1 == "capath" || $1 == "certfile" || $1 == "keyfile" || $1 == "crlfile" ||
  $1 == "bridge_cafile" || $1 == "bridge_capath" || $1 == "bridge_certfile" || $1 == "bridge_keyfile" {
    if (certs == "") fail("has TLS files (" $1 "): pass CERT_DIR (scripts/gen-certs.sh DIR writes them)")
    n = split($2, parts, "/")
    path = certs "/" parts[n]
    if ((getline probe < path) < 0) fail($1 " " path " cannot be read (run scripts/gen-certs.sh " certs ")")
    close(path)
    print $1 " " path
    next
  }
  # A bridge: the central broker of this run.
  $1 == "address" || $1 == "addresses" {
    if (bridge_address == "") fail("has a bridge (" $1 " " $2 "): set ARNG_BRIDGE_ADDRESS=HOST:PORT of the central broker")
    print $1 " " bridge_address
    next
  }
  $1 == "log_dest"             { emit_log(); next }
  $1 == "user" || $1 == "pid_file" { next }
  { print }
  END {
    if (failed) exit 1
    # No listener at all: the single port is appended below.
    if (listeners > 0 && listeners != nports) {
      printf "broker-config: %s: %d active listeners but %d ports given (%s)\n", src, listeners, nports, ports > "/dev/stderr"
      exit 1
    }
    if (listeners == 0 && nports != 1) {
      printf "broker-config: %s: no listener line, so one port expected, got %s\n", src, ports > "/dev/stderr"
      exit 1
    }
    if (!listeners || !seen_persist || !seen_passwd || !seen_acl || !seen_log) {
      print ""
      print "# Added by broker-config.sh: the source did not set these."
    }
    if (!seen_persist)  print "persistence_location " dir "/data/"
    if (!seen_passwd)   print "password_file " dir "/passwd"
    if (!seen_acl)      print "acl_file " dir "/acl"
    if (!seen_log)      emit_log()
    # Appended last: options after a listener line belong to that listener, and
    # a new listener must not capture them (or the other way round).
    if (!listeners) print "listener " port[1] " 127.0.0.1"
    if (as_root) {
      print ""
      print "# Rendered as root: stay root so the broker can read DIR/passwd (0600) and"
      print "# write DIR/data and the log (see scripts/broker-config.sh)."
      print "user root"
    }
  }
' "$src" >"$tmp" || { rm -f "$tmp"; die "rendering $src failed"; }
mv -f "$tmp" "$dir/mosquitto.conf"
