#!/usr/bin/env bash
# Installs Debian's buildah, podman, runc and debootstrap when they are missing: the suite builds the
# Dockerfile's images with buildah on a debootstrap base and runs them with podman (no Docker engine).
# Needs root or passwordless sudo, and apt access.
set -euo pipefail
missing=()
# runc, not crun: crun refuses the hybrid (v1 + v2) cgroup layout some machines have.
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo -n"
echo "==> Installing Debian's ${missing[*]} (to build and run the images without a Docker engine)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
buildah --version
