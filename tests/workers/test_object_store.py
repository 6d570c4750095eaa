"""Both object stores through the one interface: the folder and S3 (the moto server over HTTP)."""

from __future__ import annotations

import boto3
import httpx
import pytest
from botocore.config import Config

from eoz.errors import InputError
from workers.errors import ObjectNotFoundError, TransientStoreError
from workers.store import FilesystemStore, S3Store


@pytest.fixture(params=["filesystem", "s3"])
def store(request, tmp_path):
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "store")
    _, bucket = request.getfixturevalue("s3")
    return S3Store(bucket, request.getfixturevalue("moto_endpoint"))


def test_put_get_move_delete(store, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"x" * 3_000_000)  # several chunks
    store.put_file("tmp/job/output.eoz", source)
    assert store.exists("tmp/job/output.eoz") and store.size("tmp/job/output.eoz") == 3_000_000
    assert b"".join(store.iter_bytes("tmp/job/output.eoz")) == source.read_bytes()

    store.move("tmp/job/output.eoz", "results/job/output.eoz")
    assert not store.exists("tmp/job/output.eoz")
    assert store.keys("results/") == ["results/job/output.eoz"]
    assert store.keys("tmp/") == []
    copy = tmp_path / "copy.bin"
    store.get_file("results/job/output.eoz", copy)
    assert copy.read_bytes() == source.read_bytes()

    store.delete("results/job/output.eoz")
    store.delete("results/job/output.eoz")  # deleting nothing is fine
    assert store.keys("") == []


def test_put_replaces_whole_object(store, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"first version")
    store.put_file("a/b", path)
    path.write_bytes(b"second")
    store.put_file("a/b", path)
    assert b"".join(store.iter_bytes("a/b")) == b"second"
    assert store.keys("a") == ["a/b"]  # no temporary left beside it


def test_missing_objects(store, tmp_path):
    assert not store.exists("results/none/output.eoz")
    for call in (lambda: store.size("results/none"), lambda: store.get_file("results/none", tmp_path / "x"),
                 lambda: store.move("results/none", "results/other")):
        with pytest.raises(ObjectNotFoundError, match="results/none"):
            call()


@pytest.mark.parametrize("key", ["../escape", "/absolute", "a//b", "a/./b", "a/../b", "", "a\\b"])
def test_keys_are_plain_relative_paths(store, tmp_path, key):
    path = tmp_path / "f"
    path.write_bytes(b"1")
    with pytest.raises(InputError, match="not a valid object key"):
        store.put_file(key, path)


def test_presigned_url(store, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"result bytes")
    store.put_file("results/j/output.eoz", path)
    url = store.presigned_url("results/j/output.eoz")
    if isinstance(store, FilesystemStore):
        assert url is None
    else:
        assert httpx.get(url).content == b"result bytes"


def test_unreachable_s3_is_a_transient_error(tmp_path):
    from tests.workers.servers import free_port

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}", aws_access_key_id="x",
                          aws_secret_access_key="x", region_name="us-east-1",
                          config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1))
    store = S3Store("bucket", client=client)
    with pytest.raises(TransientStoreError, match="unreachable"):
        store.size("any/key")
    with pytest.raises(TransientStoreError):
        store.ping()
