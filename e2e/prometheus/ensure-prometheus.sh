#!/usr/bin/env bash
# Installs Debian's prometheus package when no prometheus binary is on the machine (the e2e suite
# and the demo start their own server from it). Needs root or passwordless sudo, and apt access.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo -n"
echo "==> Installing Debian's prometheus package (for the e2e suite's real Prometheus)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null
}
# The package enables a system service; the suite runs its own server on a free loopback port.
prometheus --version 2>&1 | head -1
