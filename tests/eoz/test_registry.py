"""ModelStore: numeric version order, newest by default, helpful errors, immutable versions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from eoz.errors import EozError, ModelMismatchError, UnknownModelError
from eoz.registry import ModelStore, sha256_bytes
from tests.conftest import publish_tiny_model


def _weights(value: float = 0.0) -> bytes:
    return save_safetensors({"model.w": np.full((2, 3), value, np.float32)})


def _manifest(**extra) -> dict:
    return {"codec": "vqvae-fpn", "bands": ["B02", "B03"], "dtype": "uint16", **extra}


def _publish(store, model_id, version, value=0.0, **extra):
    return store.publish(model_id, version, _manifest(**extra), _weights(value))


@pytest.fixture()
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_versions_sort_numerically_and_get_returns_the_newest(store):
    for v in ["2", "10", "1", "9"]:
        _publish(store, "m", v, value=float(v))
    assert store.versions("m") == ["1", "2", "9", "10"]
    newest = store.get("m")
    assert newest.version == "10"
    np.testing.assert_array_equal(newest.load_weights()["model.w"], np.full((2, 3), 10.0, np.float32))
    assert store.get("m", "2").version == "2"
    assert store.get("m", "2").load_weights()["model.w"][0, 0] == 2.0


def test_a_folder_without_manifest_is_not_a_version(store):
    _publish(store, "m", "1")
    (store.root / "m" / "3").mkdir()  # e.g. a publish that died before its manifest
    (store.root / "m" / "3" / "weights.safetensors").write_bytes(_weights())
    assert store.versions("m") == ["1"]
    assert store.get("m").version == "1"
    assert [(e.model_id, e.version) for e in store.entries()] == [("m", "1")]


def test_unknown_model_lists_what_is_available(store):
    _publish(store, "alpha", "1")
    _publish(store, "beta", "1")
    with pytest.raises(UnknownModelError, match="no model 'gamma'") as err:
        store.get("gamma")
    assert "['alpha', 'beta']" in str(err.value)
    assert str(store.root) not in str(err.value)  # the API answers with it: no host paths
    assert isinstance(err.value, LookupError) and isinstance(err.value, EozError)


def test_unknown_version_lists_the_versions(store):
    _publish(store, "alpha", "1")
    _publish(store, "alpha", "12")
    with pytest.raises(UnknownModelError, match=r"no version '3'; it has \['1', '12'\]"):
        store.get("alpha", "3")


def test_empty_or_missing_store(tmp_path):
    empty = ModelStore(tmp_path / "nowhere")
    assert empty.entries() == [] and empty.versions("x") == []
    with pytest.raises(UnknownModelError, match=r"available: \[\]"):
        empty.get("x")


def test_publish_refuses_to_overwrite(store):
    first = _publish(store, "m", "1", value=1.0, description="first")
    manifest_before = (first.path / "manifest.json").read_bytes()
    weights_before = (first.path / "weights.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="immutable"):
        _publish(store, "m", "1", value=2.0, description="second")
    assert (first.path / "manifest.json").read_bytes() == manifest_before
    assert (first.path / "weights.safetensors").read_bytes() == weights_before
    assert store.get("m", "1").manifest["description"] == "first"


def test_publish_pins_the_weights_sha256(store):
    weights = _weights(3.0)
    entry = store.publish("m", "1", _manifest(model_id="spoofed", weights_sha256="0" * 64), weights)
    on_disk = json.loads((entry.path / "manifest.json").read_text())
    assert on_disk["weights_sha256"] == sha256_bytes(weights) == entry.weights_sha256
    assert on_disk["model_id"] == "m" and on_disk["version"] == "1"  # the store's names win
    (entry.path / "weights.safetensors").write_bytes(_weights(4.0))
    with pytest.raises(ModelMismatchError, match="damaged"):
        store.get("m").load_weights()


def test_summary_fields(tmp_path):
    store = ModelStore(tmp_path / "store")
    entry = publish_tiny_model(store)
    summary = entry.summary()
    assert set(summary) == {"model_id", "version", "codec", "description", "bands", "dtype",
                            "weights_sha256", "codebook_sha256", "validation"}
    assert summary["model_id"] == "tiny-vq" and summary["version"] == "1"
    assert summary["codec"] == "vqvae-fpn" and summary["description"] == "test model"
    assert summary["bands"] == ["B02", "B03", "B04", "B08"] and summary["dtype"] == "uint16"
    assert summary["weights_sha256"] == sha256_bytes((entry.path / "weights.safetensors").read_bytes())
    assert len(summary["codebook_sha256"]) == 2 and all(len(h) == 64 for h in summary["codebook_sha256"])
    assert summary["validation"] == {}
    json.dumps(summary)  # plain data, printable by `eoz models`
    minimal = _publish(store, "bare", "1").summary()
    assert minimal["description"] == "" and minimal["codebook_sha256"] == []


def test_root_comes_from_the_environment(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "env_store")
    _publish(store, "m", "5")
    monkeypatch.setenv("EOZ_MODEL_STORE", str(tmp_path / "env_store"))
    assert ModelStore().root == tmp_path / "env_store"
    assert ModelStore().get("m").version == "5"
    assert ModelStore(tmp_path / "other").root == tmp_path / "other"  # explicit root wins


@pytest.mark.parametrize("model_id", ["../outside", "{root}/../outside"])
def test_model_ids_cannot_leave_the_store(tmp_path, model_id):
    store = ModelStore(tmp_path / "store")
    _publish(store, "inside", "1")
    _publish(ModelStore(tmp_path), "outside", "1")  # an entry next to, not in, the store
    with pytest.raises(UnknownModelError):
        store.get(model_id.format(root=store.root))
