"""Dataset downloads: checksum verification and the cache, exercised on a local file:// URL."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from recsight import datasets
from recsight.datasets import RemoteDataset, download_movielens
from recsight.errors import RecsightError


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t2\t5\t881250949\n")
    return path


def test_download_verifies_and_caches(tmp_path, archive, monkeypatch):
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    remote = RemoteDataset("ml-100k", archive.as_uri(), md5, "ml-100k")
    monkeypatch.setitem(datasets.MOVIELENS, "ml-100k", remote)
    folder = download_movielens("ml-100k", cache=tmp_path / "cache")
    assert (folder / "u.data").read_text().startswith("1\t2\t5")
    archive.unlink()  # a second call must not fetch again
    assert download_movielens("ml-100k", cache=tmp_path / "cache") == folder


def test_checksum_mismatch_is_not_cached(tmp_path, archive, monkeypatch):
    remote = RemoteDataset("ml-100k", archive.as_uri(), "0" * 32, "ml-100k")
    monkeypatch.setitem(datasets.MOVIELENS, "ml-100k", remote)
    with pytest.raises(RecsightError, match="checksum mismatch"):
        download_movielens("ml-100k", cache=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "datasets").glob("*.zip"))


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSIGHT_DATA_DIR", str(tmp_path))
    assert datasets.data_dir() == tmp_path
