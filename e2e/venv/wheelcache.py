"""Keeps a wheel for every third-party distribution installed in a virtual environment, so that the
next install can run when the package index cannot be reached (install-venv.sh).

    python3 wheelcache.py save VENV WHEELS   repack each installed distribution that WHEELS lacks,
                                             drop the wheels of versions no longer installed

A wheel is rebuilt from what pip installed: the files its RECORD lists, each checked against the
hash RECORD gives (a distribution whose files changed after the install is left out, and said so),
scripts under <name>.data/scripts with a `#!python` line for pip to rewrite, headers and data files
under <name>.data/headers and <name>.data/data. Console and GUI scripts are left out (pip writes them
from entry_points.txt), and so are byte-code caches and the files pip itself adds (INSTALLER,
REQUESTED, direct_url.json, RECORD, rewritten here). Editable installs (the project's own
components) are not cached. Standard library only: it runs before the virtual environment works.
"""
from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

PIP_WRITTEN = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise SystemExit(f"wheelcache: no lib/python3*/site-packages under {venv}")
    return found[0]


def _tags(wheel_meta: str) -> str:
    """'py2-none-any' and 'py3-none-any' → 'py2.py3-none-any' (the compressed tag set of the file name)."""
    parts: list[list[str]] = [[], [], []]
    for line in wheel_meta.splitlines():
        if line.startswith("Tag:"):
            for i, value in enumerate(line.split(":", 1)[1].strip().split("-")):
                if value not in parts[i]:
                    parts[i].append(value)
    if not all(parts):
        raise ValueError("WHEEL names no Tag")
    return "-".join(".".join(p) for p in parts)


def _entry_point_scripts(dist_info: Path) -> set[str]:
    path = dist_info / "entry_points.txt"
    if not path.exists():
        return set()
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    return {name for section in ("console_scripts", "gui_scripts") if parser.has_section(section)
            for name in parser.options(section)}


def _is_editable(dist_info: Path) -> bool:
    path = dist_info / "direct_url.json"
    if not path.exists():
        return False
    try:
        return bool(json.loads(path.read_text()).get("dir_info", {}).get("editable"))
    except (ValueError, AttributeError):
        return False


def wheel_name(dist_info: Path) -> str:
    stem = dist_info.name[: -len(".dist-info")]
    name, version = stem.rsplit("-", 1)
    return f"{name}-{version}-{_tags((dist_info / 'WHEEL').read_text())}.whl"


def _records(site: Path) -> dict[Path, set[str]]:
    """Every installed file -> the digests the RECORDs of all distributions give it. Two distributions
    may install the same file (opencv-python and opencv-python-headless both ship cv2/): the one
    installed last wins, and its digest is then the file's."""
    digests: dict[Path, set[str]] = {}
    for record in site.glob("*.dist-info/RECORD"):
        with open(record, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if len(row) > 1 and row[1]:
                    digests.setdefault(Path(os.path.normpath(site / row[0])), set()).add(row[1])
    return digests


def repack(dist_info: Path, venv: Path, out: Path, shared: dict[Path, set[str]] | None = None) -> str | None:
    """Writes out/<wheel>; returns why not, or None when written. A file whose content is not the one
    this RECORD gives is taken as it is only when another distribution's RECORD gives that content
    (a file both install); otherwise the distribution is left out. Each file is read once: checked,
    then written to the wheel, which is dropped when a later file refuses it."""
    site = dist_info.parent
    data_dir = f"{dist_info.name[: -len('.dist-info')]}.data"
    scripts = _entry_point_scripts(dist_info)
    include = venv / "include" / "site"
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".whl.partial")
    os.close(fd)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    try:
        with open(dist_info / "RECORD", newline="", encoding="utf-8") as f, \
                zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for row in csv.reader(f):
                if not row or not row[0]:
                    continue
                rel, digest = row[0], row[1] if len(row) > 1 else ""
                src = Path(os.path.normpath(site / rel))
                if src.parent == dist_info and src.name in PIP_WRITTEN:
                    continue
                if "__pycache__" in src.parts:  # pip compiles them again (a .pyc a wheel ships elsewhere stays)
                    continue
                if not src.is_file():
                    return f"{rel} is missing"
                if src.is_relative_to(site):
                    arc = src.relative_to(site).as_posix()
                elif src.parent == venv / "bin":
                    if src.name in scripts:
                        continue
                    arc = f"{data_dir}/scripts/{src.name}"
                elif src.is_relative_to(include):
                    # include/site/python3.11/<name>/<file> → <name>.data/headers/<file>
                    arc = f"{data_dir}/headers/" + "/".join(src.relative_to(include).parts[2:])
                elif src.is_relative_to(venv):
                    arc = f"{data_dir}/data/{src.relative_to(venv).as_posix()}"
                else:
                    return f"{rel} lies outside the virtual environment"
                data = src.read_bytes()
                found = _digest(data)
                is_script = arc.startswith(f"{data_dir}/scripts/")
                if digest and not is_script and found != digest and found not in (shared or {}).get(src, set()):
                    return f"{rel} changed since it was installed"
                if is_script and data.startswith(b"#!"):
                    first, _, rest = data.partition(b"\n")
                    if b"python" in first:
                        data = b"#!python\n" + rest
                        found = _digest(data)
                info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (src.stat().st_mode & 0o777 | 0o100000) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compresslevel=1)
                writer.writerow([arc, found, len(data)])
            writer.writerow([f"{dist_info.name}/RECORD", "", ""])
            zf.writestr(f"{dist_info.name}/RECORD", record.getvalue())
        os.replace(tmp, out / wheel_name(dist_info))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return None


def save(venv: Path, wheels: Path) -> int:
    site = _site_packages(venv)
    wheels.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in wheels.glob("*.whl")}
    shared = _records(site)
    written = skipped = 0
    current: set[str] = set()
    left_out: set[str] = set()  # projects whose installed version could not be repacked
    for dist_info in sorted(site.glob("*.dist-info")):
        if _is_editable(dist_info) or not (dist_info / "RECORD").exists() or not (dist_info / "WHEEL").exists():
            continue
        try:
            name = wheel_name(dist_info)
        except ValueError as e:
            print(f"wheelcache: {dist_info.name}: {e}; not cached", file=sys.stderr)
            skipped += 1
            continue
        current.add(name)
        if name in have:
            continue
        why = repack(dist_info, venv, wheels, shared)
        if why:
            print(f"wheelcache: {dist_info.name}: {why}; not cached", file=sys.stderr)
            skipped += 1
            left_out.add(name.split("-", 1)[0])
        else:
            written += 1
    # The cache mirrors the last install from the index: wheels of versions no longer installed go
    # (but a project's older wheel stays while its installed version could not be repacked).
    gone = sorted(n for n in have - current if n.split("-", 1)[0] not in left_out)
    for name in gone:
        (wheels / name).unlink()
    print(f"wheelcache: {written} wheel(s) added to {wheels}, {len(gone)} no longer installed removed "
          f"({len(current)} in all" + (f", {skipped} distribution(s) left out" if skipped else "") + ")",
          file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] != "save":
        print(__doc__, file=sys.stderr)
        return 2
    return save(Path(argv[2]).absolute(), Path(argv[3]).absolute())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
