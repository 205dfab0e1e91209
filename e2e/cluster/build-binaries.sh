#!/usr/bin/env bash
# Builds (or reuses) the pinned upstream binaries of the local fleet from the Go module proxy:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl   (gomod/kubernetes)
#   etcd, etcdctl                                                       (gomod/etcd)
#   kwok, kwokctl                                                       (gomod/kwok)
#   helm                                                                (gomod/helm)
#   syft (SBOMs of the images, docs/operating.md)                       (gomod/syft)
#   traefik (the fleet's Gateway API implementation, patched: see below) (gomod/traefik)
#   visionfleet-metrics-adapter (custom.metrics.k8s.io for the HPA)     (gomod/metrics-adapter)
#   prometheus-kubernetes-sd, on request only (see its group below)     (gomod/prometheus)
# and fetches (no build) the Gateway API and prometheus-operator modules, whose CRDs the suite installs.
#
# Each group is cached under $VISIONFLEET_CACHE/bin/<group>-<hash>/, the hash covering the group's
# go.mod + go.sum (+ its *.patch, if any), the Go version, and the flags and packages of its build,
# so a pin change rebuilds exactly that group and nothing else.
# A group is only marked complete after every binary in it built and printed its version, so an
# interrupted or broken build is redone, never trusted half-done.
#
# Prints progress on stderr and, on success, one line per binary on stdout: "<name> <path>".
# Usage: build-binaries.sh [--print-dir]   (--print-dir: print the directory holding links to all)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VISIONFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionfleet}
# How often a download that failed on the network is tried (pauses of 30 s, 60 s, …): `make` waits out
# a hiccup; a test that asks again for what `make test` just tried sets 1.
network_attempts=${VISIONFLEET_NETWORK_ATTEMPTS:-3}
case $network_attempts in
  ''|*[!0-9]*|0) echo "VISIONFLEET_NETWORK_ATTEMPTS=$network_attempts: expected a whole number ≥ 1 (default 3)" >&2; exit 2 ;;
esac

# Versions stamped into the binaries. They must match the go.mod pins (checked below) — unstamped
# Kubernetes binaries report v0.0.0-master, which kwokctl reads as "newest" and picks wrong flags for.
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
SYFT_VERSION=v1.57.1
PROMETHEUS_VERSION=v0.316.0   # Prometheus 3.16.0: its Go module is tagged v0.<major><minor>.<patch>
TRAEFIK_VERSION=v3.7.13

export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
# The module and build caches can live with the binaries' cache (CI keeps one directory).
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
export GOCACHE=${GOCACHE:-$(go env GOCACHE)}
go_version=$(go env GOVERSION)

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cat_patches() {  # group -> the contents of its *.patch files (none for most groups)
  local f
  for f in "$here/gomod/$1"/*.patch; do
    if [ -f "$f" ]; then cat "$f"; fi
  done
}

group_dir() {  # group [ldflags pkg...] -> cache dir for what this build would produce
  local g=$1; shift
  local sum
  sum=$( { cat "$here/gomod/$g/go.mod" "$here/gomod/$g/go.sum"; cat_patches "$g"; echo "$go_version $CGO_ENABLED $GOFLAGS"; echo "$@"; } \
         | sha256sum | cut -c1-16)
  echo "$cache/bin/$g-$sum"
}

require_pin() {  # group module version: fail loudly when the go.mod and this script disagree
  local g=$1 mod=$2 ver=$3
  if ! grep -qE "^[[:space:]]*(require[[:space:]]+)?${mod//./\\.}[[:space:]]+${ver//./\\.}([[:space:]]|$)" "$here/gomod/$g/go.mod"; then
    log "gomod/$g/go.mod does not pin $mod $ver, but build-binaries.sh stamps that version; update both together"
    exit 1
  fi
}

version_args() {  # binary name -> the arguments that make it print its version
  case $1 in
    kubectl) echo "version --client" ;;
    helm|etcdctl|syft|traefik) echo "version" ;;
    *) echo "--version" ;;
  esac
}

build_group() {  # group ldflags pkg...  (binaries named after the last path element)
  local g=$1 ldflags=$2; shift 2
  local dir; dir=$(group_dir "$g" "$ldflags" "$@")
  built_dirs+=("$dir")
  if [ -f "$dir/.complete" ]; then
    return 0
  fi
  local tmp="$dir.partial"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local start=$SECONDS
  log "$g: building $* (cold builds take minutes; module and build caches are reused)"
  # A module download that fails on the network (a DNS answer refused, a proxy timing out) is tried
  # again after a pause, up to $network_attempts times in all; any other failure ends the build at once.
  local attempt out="$dir.build.log"
  for attempt in $(seq "$network_attempts"); do
    # build_src (traefik): build inside that module directory instead of the group's wrapper module.
    ( cd "${build_src:-$here/gomod/$g}" && go build -ldflags "$ldflags" -o "$tmp/" "$@" ) > "$out" 2>&1 &
    local pid=$!
    # Progress while the compiler works: elapsed time and how much of the build cache has been written.
    local next=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
      sleep 1
      if [ "$SECONDS" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
        log "$g: still building ($((SECONDS - start))s, go build cache $(du -sh "$GOCACHE" 2>/dev/null | cut -f1))"
        next=$((SECONDS + 30))
      fi
    done
    if wait "$pid"; then
      cat "$out" >&2; rm -f "$out"
      break
    fi
    cat "$out" >&2
    if [ "$attempt" -lt "$network_attempts" ] && grep -qE 'dial tcp|lookup .* on|i/o timeout|TLS handshake timeout|connection (refused|reset)|unexpected EOF|502 Bad Gateway|503 Service Unavailable' "$out"; then
      log "$g: a module download failed on the network (attempt $attempt of $network_attempts); trying again in $((attempt * 30))s"
      sleep $((attempt * 30))
      continue
    fi
    rm -f "$out"
    log "$g: go build failed"
    exit 1
  done
  # go names a binary after its package's last path element: etcd's server package is ".../server/v3".
  [ "$g" = etcd ] && [ -f "$tmp/server" ] && mv "$tmp/server" "$tmp/etcd"
  # Upstream Prometheus must never shadow Debian's (which the suite and the demo run) on PATH.
  [ "$g" = prometheus ] && [ -f "$tmp/prometheus" ] && mv "$tmp/prometheus" "$tmp/prometheus-kubernetes-sd"
  local b
  for b in "$tmp"/*; do
    if ! "$b" $(version_args "$(basename "$b")") >/dev/null 2>&1; then
      log "$g: $(basename "$b") was built but does not run: $b $(version_args "$(basename "$b")")"
      exit 1
    fi
  done
  rm -rf "$dir"; mv "$tmp" "$dir"
  # Older builds of this group (other pins) are no longer referenced; they take hundreds of MB.
  local old
  for old in "$cache/bin/$g"-*; do
    [ "$old" != "$dir" ] && [ -d "$old" ] && rm -rf "$old"
  done
  touch "$dir/.complete"
  log "$g: built in $((SECONDS - start))s"
}

stamp_kube() {
  local v=$1 major minor
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  local f=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    f+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$f"
}

built_dirs=()
require_pin kubernetes k8s.io/kubernetes "$KUBE_VERSION"
require_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
require_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
require_pin helm helm.sh/helm/v3 "$HELM_VERSION"
require_pin syft github.com/anchore/syft "$SYFT_VERSION"
require_pin traefik github.com/traefik/traefik/v3 "$TRAEFIK_VERSION"

build_group etcd "-s -w" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3
build_group kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBE_VERSION#v}" \
  sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
build_group helm "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
  helm.sh/helm/v3/cmd/helm
build_group syft "-s -w -X main.version=${SYFT_VERSION#v}" github.com/anchore/syft/cmd/syft
build_group kubernetes "$(stamp_kube "$KUBE_VERSION")" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
# Traefik, the local fleet's Gateway API implementation (e2e/visionfleet_e2e/gateway.py). Its go.mod
# has replace directives, so neither `go install` nor a wrapper-module build works: the pinned
# module zip is downloaded through the wrapper module (checked against gomod/traefik/go.sum), copied,
# patched with gomod/traefik/gateway-request-mirror.patch — the only change to Traefik itself:
# Gateway API RequestMirror filters, mapped onto Traefik's own Mirroring service (upstream fails the
# whole rule with 500s), plus upstream's nested ext module that the zip leaves out; the patch file
# says more — and built inside the copy with Traefik's own go.mod/go.sum. Two build-only
# substitutions, through replace directives on patched copies, for modules the Go module proxy does
# not serve (403): lego (ACME) without 13 DNS-challenge providers
# (gomod/traefik/lego-unavailable-dns-providers.patch), and abbot/go-http-auth v0.4.0, the upstream
# of the containous fork Traefik pins, with the two functions Traefik uses of the fork
# (gomod/traefik/go-http-auth-fork-api.patch; basic/digest auth). About 12 minutes cold on two (busy) cores.
build_traefik() {
  local ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION#v}+visionfleet.mirror"
  local dir; dir=$(group_dir traefik "$ldflags" ./cmd/traefik)
  local src="$cache/src/traefik-$(basename "$dir" | sed 's/^traefik-//')"
  local pins="$here/gomod/traefik"
  # One build at a time (several sessions share the cache): a second caller waits, then reuses it.
  mkdir -p "$cache/bin"
  exec {traefik_lock}>"$cache/bin/.traefik.lock"
  if ! flock -n "$traefik_lock"; then
    log "traefik: another build of it is running; waiting for it"
    flock "$traefik_lock"
  fi
  if [ ! -f "$dir/.complete" ]; then
    apply_patch() {  # dir patch: patch(1), or git apply where patch is not installed
      if command -v patch >/dev/null; then
        ( cd "$1" && patch -p1 --batch --forward --quiet < "$2" ) >&2
      else
        git -C "$1" apply -p1 "$2" >&2
      fi
    }
    mod_dir() {  # module@version -> its directory in the module cache (downloaded and verified)
      go mod download -json "$@" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'
    }
    local mod
    mod=$(cd "$pins" && mod_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")
    if [ -z "$mod" ] || [ ! -f "$mod/go.mod" ]; then
      log "traefik: go mod download of github.com/traefik/traefik/v3@$TRAEFIK_VERSION failed"
      exit 1
    fi
    log "traefik: patching a copy of $mod in $src"
    rm -rf "$src" "$cache/src/traefik-"*; mkdir -p "$src"
    cp -R "$mod/." "$src/"; chmod -R u+w "$src"
    if ! apply_patch "$src" "$pins/gateway-request-mirror.patch"; then
      log "traefik: gomod/traefik/gateway-request-mirror.patch does not apply to $TRAEFIK_VERSION"
      exit 1
    fi
    # lego at the version Traefik pins, verified against Traefik's go.sum, patched, in _lego (a
    # nested module, so not one of Traefik's packages).
    local lego_version lego
    lego_version=$(cd "$src" && go list -m -f '{{.Version}}' github.com/go-acme/lego/v5)
    lego=$(cd "$src" && mod_dir "github.com/go-acme/lego/v5@$lego_version")
    if [ -z "$lego" ] || [ ! -d "$lego" ]; then
      log "traefik: go mod download of github.com/go-acme/lego/v5@$lego_version failed"
      exit 1
    fi
    mkdir -p "$src/_lego"; cp -R "$lego/." "$src/_lego/"; chmod -R u+w "$src/_lego"
    if ! apply_patch "$src/_lego" "$pins/lego-unavailable-dns-providers.patch"; then
      log "traefik: gomod/traefik/lego-unavailable-dns-providers.patch does not apply to lego $lego_version"
      exit 1
    fi
    # abbot/go-http-auth v0.4.0 (verified against gomod/traefik/go.sum), patched, in _goauth.
    local goauth
    goauth=$(cd "$pins" && mod_dir github.com/abbot/go-http-auth@v0.4.0)
    if [ -z "$goauth" ] || [ ! -d "$goauth" ]; then
      log "traefik: go mod download of github.com/abbot/go-http-auth@v0.4.0 failed"
      exit 1
    fi
    mkdir -p "$src/_goauth"; cp -R "$goauth/." "$src/_goauth/"; chmod -R u+w "$src/_goauth"
    if ! apply_patch "$src/_goauth" "$pins/go-http-auth-fork-api.patch"; then
      log "traefik: gomod/traefik/go-http-auth-fork-api.patch does not apply to go-http-auth v0.4.0"
      exit 1
    fi
    ( cd "$src" && go mod edit -replace github.com/go-acme/lego/v5=./_lego \
        -replace github.com/abbot/go-http-auth=./_goauth )
  fi
  build_src=$src build_group traefik "$ldflags" ./cmd/traefik
  rm -rf "$src"  # only needed to build
  exec {traefik_lock}>&-
}
build_traefik

# The fleet's custom metrics adapter (gomod/metrics-adapter/main.go, ours, on
# sigs.k8s.io/custom-metrics-apiserver): custom.metrics.k8s.io from Prometheus for the HPA
# (docs/local-fleet.md, e2e/visionfleet_e2e/metrics_adapter.py). Its source is stamped in as the
# version, so the group's hash (which covers the flags) changes with main.go as with its pins.
adapter_src=$(cat "$here/gomod/metrics-adapter"/*.go | sha256sum | cut -c1-12)
build_group metrics-adapter "-s -w -X main.version=src-$adapter_src" .

# Upstream Prometheus with Kubernetes service discovery and nothing else (its build tags): Debian's
# package has Kubernetes discovery removed ("due to the insane amount of dependencies", its
# NEWS.Debian), so the test of the documented kubernetes_sd_configs scrape job needs this one. Built
# only when asked (VISIONFLEET_BUILD_PROMETHEUS=1, by tests/e2e/test_scrape_discovery.py): about
# 5 minutes cold on two cores, which nothing else should pay.
if [ "${VISIONFLEET_BUILD_PROMETHEUS:-0}" = 1 ]; then
  require_pin prometheus github.com/prometheus/prometheus "$PROMETHEUS_VERSION"
  prom_version=${PROMETHEUS_VERSION#v0.}; prom_version="${prom_version:0:1}.${prom_version:1}"
  build_group prometheus "-s -w -X github.com/prometheus/common/version.Version=$prom_version" \
    -tags=remove_all_sd,enable_kubernetes_sd github.com/prometheus/prometheus/cmd/prometheus
fi

# Modules the suite reads files from, not builds (the Gateway API's and prometheus-operator's CRDs,
# e2e/visionfleet_e2e/cli.py and chart.py): fetched here, with the same retries, into the module cache,
# so that no test depends on the network.
fetch_module() {  # gomod module   (a warning, not a failure: only the tests that read it need it)
  if ( cd "$here/gomod/$1" && GOPROXY=off go mod download "$2" ) >/dev/null 2>&1; then
    return 0  # already in the module cache: no network
  fi
  # `make` (no arguments) waits out a network hiccup; the test harness (--print-dir) tries once.
  local attempt attempts=$network_attempts
  [ "$print_dir" = 1 ] && attempts=1
  for attempt in $(seq "$attempts"); do
    if ( cd "$here/gomod/$1" && go mod download "$2" ) >&2; then
      return 0
    fi
    [ "$attempt" -lt "$attempts" ] && { log "$1: fetching $2 failed (attempt $attempt of $attempts); trying again in $((attempt * 30))s"; sleep $((attempt * 30)); }
  done
  log "WARNING $1: could not fetch $2 through the module proxy; the tests that install its CRDs are skipped, saying why"
}
print_dir=0; [ "${1:-}" = "--print-dir" ] && print_dir=1
fetch_module gateway-api sigs.k8s.io/gateway-api
fetch_module prometheus-operator github.com/prometheus-operator/prometheus-operator

# One directory of links, so callers can put it first on PATH (Debian's kubectl must not win).
# `current` is a symlink to a fresh links directory, swapped in with one rename: a process that starts
# a binary through current/ while another build runs (a second test session, a benchmark) never finds
# it missing. Links directories of earlier runs go after a day (a process may still resolve one).
links="$cache/bin/current"
fresh=$(mktemp -d "$cache/bin/links-XXXXXX")
for d in "${built_dirs[@]}"; do
  for b in "$d"/*; do
    [ -f "$b" ] && [ -x "$b" ] && ln -sfn "$b" "$fresh/$(basename "$b")"
  done
done
chmod 755 "$fresh"
[ -d "$links" ] && [ ! -L "$links" ] && rm -rf "$links"  # the layout before: a plain directory
ln -sfn "$(basename "$fresh")" "$links.new.$$" && mv -T "$links.new.$$" "$links"
find "$cache/bin" -maxdepth 1 -name 'links-*' -type d -mmin +1440 ! -path "$fresh" -exec rm -rf {} + 2>/dev/null || true
if [ "${1:-}" = "--print-dir" ]; then
  echo "$links"
else
  for b in "$links"/*; do echo "$(basename "$b") $(readlink "$b")"; done
fi
