#!/usr/bin/env bash
# Builds influxd (InfluxDB OSS 2.x) from its Go module and caches the binary outside
# the repository, keyed by version. Docker is not available on the development and CI
# machines, and Debian only ships InfluxDB 1.x, so this is how tests get a real 2.x.
#
# Prints the path of the cached binary on stdout (everything else goes to stderr).
#
# Environment:
#   ARNG_INFLUXD_VERSION  InfluxDB version to build (default 2.7.12)
#   ARNG_CACHE_DIR        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/arng)
#
# Why each step exists (see docs/decisions.md, "InfluxDB without Docker"):
# - `go install ...@version` refuses modules with `replace` directives, so the module is
#   downloaded, copied to a writable tree and built with `go build`.
# - Flux links libflux (Rust) through cgo `pkg-config: flux`; we build libflux with the
#   installed cargo and write our own flux.pc pointing at the static library.
# - flux v0.196.1 pins Rust 1.72 (rust-toolchain.toml) and denies warnings under the
#   default `strict` feature; both are removed so the installed toolchain builds it.
set -euo pipefail

version="${ARNG_INFLUXD_VERSION:-2.7.12}"
cache="${ARNG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/arng}"
out="$cache/influxd-$version/influxd"

log() { echo "build-influxd: $*" >&2; }

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

need() { command -v "$1" >/dev/null 2>&1 || { log "missing tool: $1 ($2)"; exit 1; }; }
need go "install Go >= 1.23"
need cargo "install Rust with rustup"
if ! command -v pkg-config >/dev/null 2>&1; then
  log "installing pkg-config"
  (apt-get update -qq && apt-get install -y -qq pkg-config) >&2
fi
need pkg-config "apt-get install pkg-config"

work="$cache/build-$version"
mkdir -p "$work"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

log "downloading github.com/influxdata/influxdb/v2@v$version"
influx_dir=$(go mod download -json "github.com/influxdata/influxdb/v2@v$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$influx_dir" ] || { log "go mod download gave no Dir for influxdb"; exit 1; }

src="$work/influxdb"
rm -rf "$src"
cp -r "$influx_dir" "$src"
chmod -R u+w "$src"

flux_version=$(sed -n 's/^[[:space:]]*github.com\/influxdata\/flux \(v[^ ]*\).*$/\1/p' "$src/go.mod" | head -n1)
[ -n "$flux_version" ] || { log "cannot find the flux version in go.mod"; exit 1; }
log "influxdb v$version uses flux $flux_version"

(cd "$src" && go mod download -json "github.com/influxdata/flux@$flux_version") >"$work/flux.json"
flux_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/flux.json")
[ -n "$flux_dir" ] || { log "go mod download gave no Dir for flux"; exit 1; }

fsrc="$work/flux"
rm -rf "$fsrc"
cp -r "$flux_dir" "$fsrc"
chmod -R u+w "$fsrc"
rm -f "$fsrc/rust-toolchain.toml" "$fsrc/libflux/rust-toolchain.toml" "$fsrc/rust-toolchain"
# Drop `strict` (deny(warnings)) from the default features of every libflux crate.
for toml in "$fsrc"/libflux/flux*/Cargo.toml; do
  sed -i 's/^default = \[\(.*\)"strict",\{0,1\}\(.*\)\]/default = [\1\2]/' "$toml"
done

log "building libflux with $(cargo --version)"
(cd "$fsrc/libflux" && env -u RUSTUP_TOOLCHAIN cargo build --release --locked -p flux) >&2

prefix="$work/libflux-prefix"
rm -rf "$prefix"
mkdir -p "$prefix/lib" "$prefix/include" "$prefix/lib/pkgconfig"
cp "$fsrc/libflux/target/release/libflux.a" "$prefix/lib/"
cp -r "$fsrc/libflux/include/influxdata" "$prefix/include/"
cat >"$prefix/lib/pkgconfig/flux.pc" <<PC
prefix=$prefix
Name: flux
Description: Flux query language runtime (libflux), built for arng's local InfluxDB
Version: ${flux_version#v}
Libs: -L\${prefix}/lib -lflux -ldl -lpthread -lm
Cflags: -I\${prefix}/include
PC

log "building influxd (this takes 10-20 minutes on 2 cores the first time)"
mkdir -p "$(dirname "$out")"
(cd "$src" && PKG_CONFIG_PATH="$prefix/lib/pkgconfig" CGO_ENABLED=1 \
  go build -tags sqlite_foreign_keys,sqlite_json \
  -ldflags "-s -w -X main.version=$version -X main.commit=arng-build -checklinkname=0" \
  -o "$out.tmp" ./cmd/influxd) >&2
mv "$out.tmp" "$out"
log "built $out"
echo "$out"
