"""A small trained pipeline over a generated shop, shared by the serving tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.models.registry import create_model
from recsight.serving.app import ServiceConfig, create_app

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def shop_model(tmp_path_factory) -> tuple[Path, Path]:
    """(store snapshot folder, model folder): a 300-user shop and an ItemKNN trained on it."""
    root = tmp_path_factory.mktemp("serving")
    shop = generate_shop(root / "shop", n_users=300, n_items=80, n_days=20, seed=5)
    with Store(root / "base.duckdb") as s:
        ingest(s, shop.out_dir)
        data = s.interactions()
    create_model("itemknn").fit(data).save(root / "model")
    return root / "base.duckdb", root / "model"


@pytest.fixture
def store_copy(shop_model, tmp_path) -> Path:
    base, _ = shop_model
    db = tmp_path / "live.duckdb"
    db.write_bytes(base.read_bytes())
    return db


@pytest.fixture
def client(shop_model, store_copy):
    _, model = shop_model
    app = create_app(ServiceConfig(model=model, db=store_copy, api_key=API_KEY))
    with TestClient(app) as c:
        yield c


AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def text_pipeline(shop_model, tmp_path_factory) -> Path:
    """A pipeline folder: ItemKNN main model plus a content fallback that reads text."""
    from recsight.models.manifest import write_manifest

    base, model = shop_model
    folder = tmp_path_factory.mktemp("pipeline")
    with Store(base, read_only=True) as s:
        data = s.interactions()
    create_model("itemknn").fit(data).save(folder / "main")
    create_model("content").fit(data).save(folder / "content")
    write_manifest(folder, "main", ["content"], training_cutoff="2026-01-20T00:00:00Z")
    return folder
