#!/usr/bin/env bash
# Usage: scripts/gen-certs.sh DIR [NAME...]
#
# Generates, with openssl, the certificates of the broker's TLS listeners
# (mosquitto-conf/tls.conf) into DIR, which must not hold any of them yet:
#   ca.crt, ca.key          a certificate authority (CN "arng development CA <random
#                           id>": two CAs made by two runs have different names, so a
#                           client given the wrong one says "unknown CA"). Clients
#                           verify the broker against ca.crt (arng --mqtt-ca,
#                           mosquitto_sub --cafile); the broker verifies client
#                           certificates against it (cafile). ca.key signs; keep it
#                           off the broker.
#   server.crt, server.key  the broker's certificate, signed by the CA, valid for
#                           localhost, 127.0.0.1 and ::1, plus every NAME given
#                           (a host name, or an IP address), e.g. `broker` for the
#                           compose network. Clients check the name they dial against
#                           this list (subjectAltName), not against the CN.
#   client.crt, client.key  a client certificate signed by the CA (CN "arng-client",
#                           extendedKeyUsage clientAuth), for the mutual-TLS listener
#                           (arng --mqtt-cert/--mqtt-key).
# Keys are ECDSA P-256 (PKCS#8 PEM), created 0600; certificates are 0644. The CA is
# valid 10 years, the other certificates 825 days (the longest that Apple clients
# accept for a server certificate). These are development certificates: for a real
# deployment use your own CA or a public one, and keep ca.key elsewhere.
#
# Refuses to overwrite: regenerating a CA silently would invalidate every client
# that trusts the old one. Remove the files first to start over.
set -euo pipefail

die() { echo "gen-certs: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 DIR [NAME...]"
dir=$1
shift
command -v openssl >/dev/null 2>&1 || die "openssl not found: apt-get install openssl"

mkdir -p "$dir"
for f in ca.crt ca.key server.crt server.key client.crt client.key; do
  [ ! -e "$dir/$f" ] || die "$dir/$f already exists (remove the old certificates first)"
done

# subjectAltName of the server: loopback names always, then the extra names.
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  case "$name" in
    *:*) san="$san,IP:$name" ;;                         # IPv6 address
    *[!0-9.]*) san="$san,DNS:$name" ;;                  # host name
    *) san="$san,IP:$name" ;;                           # IPv4 address
  esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA: basicConstraints CA:TRUE and keyCertSign are what TLS clients (rustls,
# OpenSSL) check before they accept it as an issuer.
key "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days 3650 \
  -subj "/O=arng/CN=arng development CA $(openssl rand -hex 4)" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -out "$work/ca.crt"

# sign NAME CN EXTENSIONS: a key and a certificate signed by the CA. A random serial
# each time, so two certificates of one CA never share one.
sign() {
  local name=$1 cn=$2 ext=$3
  key "$work/$name.key"
  openssl req -new -key "$work/$name.key" -subj "/O=arng/CN=$cn" -out "$work/$name.csr"
  printf '%b' "$ext" >"$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 825 \
    -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
}

sign server "arng broker" \
  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=$san\nauthorityKeyIdentifier=keyid\n"
sign client "arng-client" \
  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid\n"

# Both certificates must chain to the CA; a failure here is a bug of this script.
openssl verify -CAfile "$work/ca.crt" "$work/server.crt" "$work/client.crt" >/dev/null \
  || die "generated certificates do not verify against the generated CA"

for f in ca server client; do
  install -m 0644 "$work/$f.crt" "$dir/$f.crt"
  install -m 0600 "$work/$f.key" "$dir/$f.key"
done
echo "gen-certs: wrote CA, server ($san) and client certificates to $dir" >&2
