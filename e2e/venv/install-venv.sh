#!/usr/bin/env bash
# install-venv.sh PYTHON VENV PIP-INSTALL-ARGS...
#
# Creates VENV and installs PIP-INSTALL-ARGS into it from the package index. After each install from
# the index, every third-party distribution installed is kept as a wheel in
# $VISIONFLEET_CACHE/wheels (wheelcache.py; added once, then reused), so that when the index cannot
# be reached (a registry outage, a machine cut off) the same requirements install from those wheels
# alone (pip --no-index): same resolver, same pins, nothing newer than what was last installed. A
# requirement those wheels cannot meet fails as it would have online, with pip's own message.
set -euo pipefail
python=$1; venv=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
cache=${VISIONFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/visionfleet}
wheels=$cache/wheels
pip=("$venv/bin/pip" --disable-pip-version-check)
log=$(mktemp); trap 'rm -f "$log"' EXIT

"$python" -m venv "$venv"

offline_install() {  # why, pip args...
  local why=$1; shift
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "==> $why, and $wheels holds no wheels from an earlier install: nothing to install from" >&2
    return 1
  fi
  echo "==> $why: installing from the $(ls "$wheels"/*.whl | wc -l) wheels in $wheels (no index)" >&2
  "${pip[@]}" install --quiet --no-index --find-links "$wheels" "$@"
}

# The newest pip of the index and the wheel cache (pip carries on with the cache alone when the index
# does not answer); else the one venv brought.
"${pip[@]}" install --quiet --upgrade pip --find-links "$wheels" >"$log" 2>&1 \
  || echo "==> keeping venv's own pip ($("${pip[@]}" --version | cut -d' ' -f2))" >&2

if "${pip[@]}" install --quiet "$@" 2>"$log"; then
  cat "$log" >&2
  echo "==> Keeping a wheel of each installed distribution in $wheels (new ones only)" >&2
  "$python" "$here/wheelcache.py" save "$venv" "$wheels" \
    || echo "==> WARNING: the wheel cache was not updated; an install without the index may miss some" >&2
else
  # pip's own reason (its ERROR lines, and the last retry's cause when the index did not answer)
  { grep -E "ERROR:|Errno" "$log" | sed 's/^[[:space:]]*//' | sort -u | tail -n 4; } >&2 || tail -n 5 "$log" >&2
  offline_install "The install from the package index failed (the lines above say why)" "$@"
fi
