#!/usr/bin/env bash
# install-venv.sh PYTHON VENV PIP-INSTALL-ARGS...
#
# Creates VENV and installs PIP-INSTALL-ARGS into it from the package index. After each install from
# the index, every third-party distribution installed is kept as a wheel in
# $VISIONFLEET_CACHE/wheels (wheelcache.py; added once, then reused), so that when the index cannot
# be reached (a registry outage, a machine cut off) the same requirements install from those wheels
# alone (pip --no-index): same resolver, same pins, nothing newer than what was last installed. A
# requirement those wheels cannot meet fails as it would have online, with pip's own message.
#
# Only a failure that pip's log shows to be the network's (e2e/visionfleet_e2e/registry.py) falls
# back to the wheels; any other (a conflict, a build that fails) fails here, its log kept in
# VENV/pip-install.log. A venv made from the wheels is marked (VENV/.from-wheel-cache): the Makefile
# then leaves its stamp unset, so the next `make` tries the index again.
set -euo pipefail
python=$1; venv=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
cache=${VISIONFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionfleet}
wheels=$cache/wheels
pip=("$venv/bin/pip" --disable-pip-version-check)

"$python" -m venv "$venv"
log=$venv/pip-install.log
rm -f "$venv/.from-wheel-cache"

# The newest pip of the index and the wheel cache (pip carries on with the cache alone when the index
# does not answer); else the one venv brought.
"${pip[@]}" install --quiet --upgrade pip --find-links "$wheels" >"$log" 2>&1 \
  || echo "==> keeping venv's own pip ($("${pip[@]}" --version | cut -d' ' -f2))" >&2

if "${pip[@]}" install --quiet "$@" >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"
  echo "==> Keeping a wheel of each installed distribution in $wheels (new ones only)" >&2
  "$python" "$here/wheelcache.py" save "$venv" "$wheels" \
    || echo "==> WARNING: the wheel cache was not updated; an install without the index may miss some" >&2
  exit 0
fi

# pip's own reason: its ERROR lines, in order, once each.
grep -E "ERROR:" "$log" | awk '!seen[$0]++' | tail -n 4 >&2 || true
if ! why=$("$python" "$here/../visionfleet_e2e/registry.py" <"$log"); then
  echo "==> The install from the package index failed, not for the network: the whole log is $log" >&2
  exit 1
fi
echo "==> The package index cannot be reached: $why" >&2
if ! compgen -G "$wheels/*.whl" >/dev/null; then
  echo "==> $wheels holds no wheels from an earlier install: nothing to install from" >&2
  exit 1
fi
echo "==> Installing from the $(ls "$wheels"/*.whl | wc -l) wheels in $wheels (no index)" >&2
"${pip[@]}" install --quiet --no-index --find-links "$wheels" "$@"
touch "$venv/.from-wheel-cache"
rm -f "$log"
