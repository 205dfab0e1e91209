#!/usr/bin/env bash
# Builds (or reuses) the pinned upstream binaries of the local fleet from the Go module proxy:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl   (gomod/kubernetes)
#   etcd, etcdctl                                                       (gomod/etcd)
#   kwok, kwokctl                                                       (gomod/kwok)
#   helm                                                                (gomod/helm)
#   syft (SBOMs of the images, docs/operating.md)                       (gomod/syft)
#   prometheus-kubernetes-sd, on request only (see its group below)     (gomod/prometheus)
#
# Each group is cached under $VISIONFLEET_CACHE/bin/<group>-<hash>/, the hash covering the group's
# go.mod + go.sum, the Go version, and the flags and packages of its build, so a pin change rebuilds
# exactly that group and nothing else.
# A group is only marked complete after every binary in it built and printed its version, so an
# interrupted or broken build is redone, never trusted half-done.
#
# Prints progress on stderr and, on success, one line per binary on stdout: "<name> <path>".
# Usage: build-binaries.sh [--print-dir]   (--print-dir: print the directory holding links to all)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VISIONFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionfleet}

# Versions stamped into the binaries. They must match the go.mod pins (checked below) — unstamped
# Kubernetes binaries report v0.0.0-master, which kwokctl reads as "newest" and picks wrong flags for.
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
SYFT_VERSION=v1.57.1
PROMETHEUS_VERSION=v0.316.0   # Prometheus 3.16.0: its Go module is tagged v0.<major><minor>.<patch>

export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
# The module and build caches can live with the binaries' cache (CI keeps one directory).
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
export GOCACHE=${GOCACHE:-$(go env GOCACHE)}
go_version=$(go env GOVERSION)

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

group_dir() {  # group [ldflags pkg...] -> cache dir for what this build would produce
  local g=$1; shift
  local sum
  sum=$( { cat "$here/gomod/$g/go.mod" "$here/gomod/$g/go.sum"; echo "$go_version $CGO_ENABLED $GOFLAGS"; echo "$@"; } \
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
    helm|etcdctl|syft) echo "version" ;;
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
  ( cd "$here/gomod/$g" && go build -ldflags "$ldflags" -o "$tmp/" "$@" ) >&2 &
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
  if ! wait "$pid"; then
    log "$g: go build failed"
    exit 1
  fi
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

# One directory of links, so callers can put it first on PATH (Debian's kubectl must not win).
links="$cache/bin/current"
rm -rf "$links"; mkdir -p "$links"
for d in "${built_dirs[@]}"; do
  for b in "$d"/*; do
    [ -f "$b" ] && [ -x "$b" ] && ln -sfn "$b" "$links/$(basename "$b")"
  done
done
if [ "${1:-}" = "--print-dir" ]; then
  echo "$links"
else
  for b in "$links"/*; do echo "$(basename "$b") $(readlink "$b")"; done
fi
