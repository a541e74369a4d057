#!/usr/bin/env bash
# Builds a minimal Telegraf (only the plugins bench/vs-telegraf.sh uses) from its Go
# module and caches the binary outside the repository, keyed by version. It exists for
# the "arng vs Telegraf" benchmark only; nothing in arng itself depends on Telegraf.
#
# Prints the path of the cached binary on stdout (everything else goes to stderr).
#
# Environment:
#   ARNG_TELEGRAF_VERSION  Telegraf version to build (default 1.39.3)
#   ARNG_CACHE_DIR         cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/arng)
#
# Why each step exists:
# - Telegraf's go.mod has no `replace` directives, so a plain `go install module@version`
#   builds it straight from the Go module proxy; GOBIN points into our cache.
# - The `custom` build tag turns off every plugin that is not named by its own tag
#   (docs/CUSTOMIZATION.md in Telegraf); the full build links hundreds of plugins and
#   takes far longer on 2 cores. The plugin tags match plugins/<category>/all/*.go.
# - `-s -w` strips debug info, as Telegraf's own release packages do (its Makefile), and
#   `-X ...internal.Version` stamps the version those packages would show.
set -euo pipefail

version="${ARNG_TELEGRAF_VERSION:-1.39.3}"
cache="${ARNG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/arng}"
dir="$cache/telegraf-$version"
out="$dir/telegraf"
tags="custom,inputs.mqtt_consumer,parsers.json_v2,processors.enum,outputs.influxdb_v2"

log() { echo "build-telegraf: $*" >&2; }

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "missing tool: go (Telegraf $version needs Go >= 1.26)"; exit 1; }

mkdir -p "$dir"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
# A build into a temporary GOBIN, then a rename, so an interrupted build never leaves a
# half-written binary at the cached path (which the early exit above would trust).
tmpbin="$dir/gobin.tmp"
rm -rf "$tmpbin"
mkdir -p "$tmpbin"

log "building github.com/influxdata/telegraf/cmd/telegraf@v$version with tags $tags"
log "(several minutes on 2 cores the first time)"
GOBIN="$tmpbin" CGO_ENABLED=0 go install -tags "$tags" \
  -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=$version" \
  "github.com/influxdata/telegraf/cmd/telegraf@v$version" >&2 \
  || { log "go install failed"; exit 1; }
[ -x "$tmpbin/telegraf" ] || { log "go install produced no telegraf binary in $tmpbin"; exit 1; }

# Fail loudly if the tags did not select the plugins (a typo would build a telegraf that
# only errors at config load time, mid-benchmark).
plugins=$("$tmpbin/telegraf" plugins) || { log "the built telegraf does not run"; exit 1; }
for p in inputs.mqtt_consumer parsers.json_v2 processors.enum outputs.influxdb_v2; do
  if ! grep -qx "$p" <<<"$plugins"; then
    log "built telegraf lacks plugin $p (tags: $tags)"; exit 1
  fi
done

mv "$tmpbin/telegraf" "$out"
rm -rf "$tmpbin"
log "built $out ($("$out" --version))"
echo "$out"
