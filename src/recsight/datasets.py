"""Public datasets: where local copies live, and downloads from GroupLens with checksums.

Tests and benchmarks read local copies from `RECSIGHT_DATA_DIR` (default `../shared/data`
when it exists). `download_movielens` fetches the official archives for users with internet,
verifies their published MD5 and caches them, so a second call does not touch the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recsight.errors import InputError, RecsightError


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    url: str
    md5: str  # GroupLens publishes MD5 sums (ml-100k.zip.md5) beside each archive
    folder: str  # the folder inside the archive


#: Official GroupLens archives and their published MD5 checksums.
MOVIELENS: dict[str, RemoteDataset] = {
    "ml-100k": RemoteDataset(
        "ml-100k",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "0e33842e24a9c977be4e0107933c0723",
        "ml-100k",
    ),
    "ml-1m": RemoteDataset(
        "ml-1m",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        "ml-1m",
    ),
}


def data_dir() -> Path | None:
    """The local datasets folder: `RECSIGHT_DATA_DIR`, else `../shared/data` if it exists."""
    env = os.environ.get("RECSIGHT_DATA_DIR")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def cache_dir() -> Path:
    """Where downloads are cached: `RECSIGHT_CACHE_DIR` or `~/.cache/recsight`."""
    return Path(os.environ.get("RECSIGHT_CACHE_DIR", Path.home() / ".cache" / "recsight"))


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_movielens(name: str, cache: Path | None = None, timeout: float = 60.0) -> Path:
    """Download (once) and unpack a MovieLens archive; returns the dataset folder.

    The archive's MD5 must match the published one; a mismatch deletes the file and fails.
    """
    if name not in MOVIELENS:
        raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(MOVIELENS)}")
    ds = MOVIELENS[name]
    root = (cache or cache_dir()) / "datasets"
    target = root / ds.folder
    archive = root / f"{name}.zip"
    if target.is_dir() and archive.exists() and md5_of(archive) == ds.md5:
        return target
    root.mkdir(parents=True, exist_ok=True)
    if not archive.exists() or md5_of(archive) != ds.md5:
        part = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(ds.url, timeout=timeout) as resp, part.open("wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise RecsightError(f"cannot download {ds.url}: {exc}") from None
        digest = md5_of(part)
        if digest != ds.md5:
            part.unlink(missing_ok=True)
            raise RecsightError(
                f"{ds.url}: checksum mismatch (got {digest}, expected {ds.md5}); not cached"
            )
        part.replace(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root)
    return target
