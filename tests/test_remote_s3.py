"""Shards in an S3 bucket (moto's S3 server on 127.0.0.1, started by the test) read through s3fs:
a prefix lists its shards, the samples equal the local files', the index keys them by URL, size
and ETag, and a rewritten object makes the index stale."""

import json
import os
import socket

import pytest

from mclip.data.index import build_index, load_index, write_index
from mclip.data.shards import SkipCounter, expand_shards, iter_raw_samples

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def bucket(demo_data):
    """A bucket 'shards' on a local S3 endpoint holding the demo training shards under train/."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import fsspec

    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
        )
    }
    # the endpoint for s3fs (fsspec's config, as FSSPEC_S3_ENDPOINT_URL sets it) and for botocore
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="shards")
    for path in sorted((demo_data / "train").glob("*.tar")):
        client.upload_file(str(path), "shards", f"train/{path.name}")
    yield client
    fsspec.config.conf.pop("s3", None)
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _samples(urls):
    counter = SkipCounter()
    return [
        (s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
        for s in iter_raw_samples(urls, counter)
    ], counter


def test_s3_shards_read_as_the_local_files(bucket, demo_data):
    urls = expand_shards("s3://shards/train/")
    assert urls == [f"s3://shards/train/shard-00000{i}.tar" for i in range(4)]
    assert expand_shards("s3://shards/train/*.tar") == urls
    remote, counter = _samples(urls)
    local, _ = _samples(sorted(str(p) for p in (demo_data / "train").glob("*.tar")))
    assert remote == local and counter == {}
    missing, counter = _samples(["s3://shards/train/none.tar", urls[0]])
    assert len(missing) == 120 and counter["unreadable_shard_or_member"] == 1


def test_the_index_keys_s3_shards_by_url_size_and_etag(bucket, demo_data, tmp_path):
    urls = expand_shards("s3://shards/train/")
    index = build_index(urls)
    record = index["shards"][urls[0]]
    assert (
        record["path"] == urls[0]
        and record["bytes"] == (demo_data / "train" / "shard-000000.tar").stat().st_size
    )
    assert record["version"] and "mtime_ns" not in record
    write_index(index, tmp_path / "index.json")
    assert load_index(urls, tmp_path / "index.json")["samples"] == 480
    data = (demo_data / "train" / "shard-000001.tar").read_bytes()
    bucket.put_object(Bucket="shards", Key="train/shard-000000.tar", Body=data)  # rewritten
    with pytest.raises(Exception, match="older than shard 's3://shards/train/shard-000000.tar'"):
        load_index(urls, tmp_path / "index.json")
    bucket.upload_file(
        str(demo_data / "train" / "shard-000000.tar"), "shards", "train/shard-000000.tar"
    )
    assert json.loads((tmp_path / "index.json").read_text())["version"] == 2
