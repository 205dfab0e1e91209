"""Installing without the package index: the wheel cache (e2e/venv/wheelcache.py) and telling an
unreachable registry from a broken build (visionfleet_e2e.registry, tests/helpers.registry_needed)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from visionfleet_e2e.registry import unreachable

from ..helpers import registry_needed

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("wheelcache", ROOT / "e2e" / "venv" / "wheelcache.py")
wheelcache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelcache)

# What each tool printed here when its registry could not be reached (host names shortened).
UNREACHABLE = [
    'github.com/x/y@v0.79.2: Get "https://proxy.example/github.com/x/y/@v/v0.79.2.info": dial tcp: lookup '
    'proxy.example on 10.255.255.53:53: read udp 10.255.255.53:33681->10.255.255.53:53: read: connection refused',
    "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection "
    "broken by 'NewConnectionError('<HTTPSConnection object>: Failed to establish a new connection: [Errno -3] "
    "Temporary failure in name resolution')': /simple/setuptools/",
    "E: Failed getting release file http://mirror.example/debian/dists/bookworm/Release",
    "curl: (6) Could not resolve host: registry.example",
    'Get "https://proxy.example/x/@v/list": dial tcp 10.0.0.1:443: i/o timeout',
    "W: Failed to fetch http://mirror.example/debian/dists/bookworm/InRelease  Temporary failure resolving "
    "'mirror.example'",
    "urllib3.exceptions.NewConnectionError: Failed to establish a new connection: [Errno -2] Name or service not known",
    "ConnectTimeoutError(<HTTPSConnection(host='registry.example', port=443)>, 'Connection to registry.example "
    "timed out. (connect timeout=15)')",
    'dial tcp: lookup proxy.example: server misbehaving',
    'dial tcp 10.0.0.1:443: connect: connection timed out',
    'dial tcp 10.0.0.1:443: connect: no route to host',
    'net/http: TLS handshake timeout',
    "curl: (7) Failed to connect to registry.example port 443 after 3 ms: Couldn't connect to server",
]
# Failures of the build itself: these must fail the test, not skip it.
BROKEN = [
    "verifying github.com/x/y@v1.0.0: checksum mismatch",
    "go: github.com/x/y@v9.9.9: reading https://proxy.example/github.com/x/y/@v/v9.9.9.info: 404 Not Found",
    "ERROR: Could not find a version that satisfies the requirement torch==0.0.1 (from versions: 2.5.1)",
    "main.go:12:2: undefined: foo",
    "E: Couldn't find these debs: python3-nonexistent",
    # the local fleet refusing connections is a broken test fleet, not the registry
    'Get "https://127.0.0.1:40123/api": dial tcp 127.0.0.1:40123: connect: connection refused',
    "The connection to the server localhost:6443 was refused - did you specify the right host or port?",
]


@pytest.mark.parametrize("line", UNREACHABLE)
def test_an_unreachable_registry_is_recognised(line):
    assert unreachable(f"some build output\n{line}\nmore") == line


@pytest.mark.parametrize("line", BROKEN)
def test_a_broken_build_is_not_taken_for_the_network(line):
    assert unreachable(line) is None


def test_only_the_end_of_the_output_counts():
    recovered = UNREACHABLE[1] + "\n" + "\n".join(f"Downloading part {i}" for i in range(60)) + "\n" + BROKEN[2]
    assert unreachable(recovered) is None
    assert unreachable(BROKEN[2] + "\n" + UNREACHABLE[1]) == UNREACHABLE[1]


def test_registry_needed_skips_only_for_the_network():
    with pytest.raises(pytest.skip.Exception) as skipped:
        with registry_needed("a module"):
            raise RuntimeError("could not fetch x:\n" + UNREACHABLE[0])
    assert "needs a module" in str(skipped.value) and "connection refused" in str(skipped.value)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        with registry_needed("a module"):
            raise RuntimeError(BROKEN[0])


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _installed(venv: Path, name: str, files: dict[str, bytes], tag: str = "py3-none-any",
               entry_points: str = "") -> Path:
    """A distribution laid out as pip leaves it: files, dist-info with WHEEL, METADATA, RECORD."""
    site = venv / "lib" / "python3.11" / "site-packages"
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    meta = {f"{dist.name}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
            f"{dist.name}/WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n".encode(),
            f"{dist.name}/INSTALLER": b"pip\n"}
    if entry_points:
        meta[f"{dist.name}/entry_points.txt"] = entry_points.encode()
    rows = []
    for rel, data in {**files, **meta}.items():
        path = (site / rel).resolve() if rel.startswith("..") else site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(f"{rel},{_digest(data)},{len(data)}")
    rows.append(f"{dist.name}/RECORD,,")
    (dist / "RECORD").write_text("\n".join(rows) + "\n")
    return dist


def test_a_repacked_wheel_installs_into_a_fresh_venv_without_an_index(tmp_path):
    # Given a venv in which pip installed a package, a plain script and a console script
    venv = tmp_path / "old"
    _installed(venv, "tinypkg", {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg/__pycache__/__init__.cpython-311.pyc": b"not copied",
        "../../../bin/tiny-plain": f"#!{venv}/bin/python\nprint('plain', 7)\n".encode(),
        "../../../bin/tiny-cli": b"#!/x/python\n# written by pip from entry_points\n",
    }, entry_points="[console_scripts]\ntiny-cli = tinypkg:main\n")
    (venv / "bin" / "tiny-plain").chmod(0o755)
    # When it is saved to the wheel cache
    wheels = tmp_path / "wheels"
    assert wheelcache.save(venv, wheels) == 0
    whl = wheels / "tinypkg-1.0-py3-none-any.whl"
    names = zipfile.ZipFile(whl).namelist()
    # Then the wheel holds the package and the plain script, not the byte code nor pip's own files
    assert "tinypkg/__init__.py" in names and "tinypkg-1.0.data/scripts/tiny-plain" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(("INSTALLER", "bin/tiny-cli"))]
    assert zipfile.ZipFile(whl).read("tinypkg-1.0.data/scripts/tiny-plain").startswith(b"#!python\n")
    # And a fresh venv installs it with no index at all, the script runnable
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True)
    subprocess.run([str(fresh / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links", str(wheels),
                    "tinypkg"], check=True, env={"PATH": "/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    out = subprocess.run([str(fresh / "bin" / "python"), "-c", "import tinypkg; print(tinypkg.VALUE)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "42"
    assert subprocess.run([str(fresh / "bin" / "tiny-plain")], capture_output=True, text=True,
                          check=True).stdout.strip() == "plain 7"
    # And a second save adds nothing
    before = whl.stat().st_mtime_ns
    wheelcache.save(venv, wheels)
    assert whl.stat().st_mtime_ns == before


def test_a_changed_file_keeps_the_distribution_out_unless_another_one_installed_it(tmp_path):
    venv = tmp_path / "venv"
    _installed(venv, "changed", {"changed/__init__.py": b"A = 1\n"})
    (venv / "lib/python3.11/site-packages/changed/__init__.py").write_bytes(b"A = 2  # edited by hand\n")
    # Two distributions that both ship shared/lib.so: the one installed last wrote the file
    _installed(venv, "first", {"shared/lib.so": b"first build"})
    _installed(venv, "second", {"shared/lib.so": b"second build"})
    wheels = tmp_path / "wheels"
    wheelcache.save(venv, wheels)
    found = sorted(p.name for p in wheels.glob("*.whl"))
    assert found == ["first-1.0-py3-none-any.whl", "second-1.0-py3-none-any.whl"]
    assert zipfile.ZipFile(wheels / found[0]).read("shared/lib.so") == b"second build"


def test_the_wheel_name_carries_every_tag(tmp_path):
    dist = _installed(tmp_path / "venv", "both", {"both.py": b""}, tag="py2-none-any\nTag: py3-none-any")
    assert wheelcache.wheel_name(dist) == "both-1.0-py2.py3-none-any.whl"


def test_the_cache_follows_the_last_install(tmp_path):
    venv = tmp_path / "venv"
    _installed(venv, "kept", {"kept.py": b""})
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "kept-0.9-py3-none-any.whl").write_bytes(b"an older version")
    wheelcache.save(venv, wheels)
    assert sorted(p.name for p in wheels.glob("*.whl")) == ["kept-1.0-py3-none-any.whl"]


def test_an_older_wheel_stays_while_the_installed_version_cannot_be_repacked(tmp_path):
    venv = tmp_path / "venv"
    _installed(venv, "edited", {"edited.py": b"A = 1\n"})
    (venv / "lib/python3.11/site-packages/edited.py").write_bytes(b"A = 2\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "edited-0.9-py3-none-any.whl").write_bytes(b"the last good one")
    wheelcache.save(venv, wheels)
    assert sorted(p.name for p in wheels.glob("*.whl")) == ["edited-0.9-py3-none-any.whl"]
