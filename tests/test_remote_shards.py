"""Shards over HTTP (a server of the test's own on 127.0.0.1) and through ``pipe:`` read exactly as
the same shards on disk; transient faults (a dropped connection, 5xx, 429, a failing command) are
retried where the read broke, with or without Range support, and counted; permanent ones (404)
and faults that outlast the retries are counted as unreadable and the stream goes on."""

import shutil
import sys
from collections import Counter

import pytest

from mclip.config import ConfigError
from mclip.data.remote import RetryPolicy, ShardStream, redact
from mclip.data.shards import SkipCounter, expand_shards, iter_raw_samples
from shard_server import ShardServer

NO_WAIT = dict(sleep=lambda seconds: None)


def _samples(urls, policy=None):
    counter = SkipCounter()
    return [
        (s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
        for s in iter_raw_samples(urls, counter, policy)
    ], counter


@pytest.fixture(scope="module")
def shards(demo_data):
    return sorted((demo_data / "train").glob("*.tar"))


def test_http_shards_read_as_the_local_files(shards):
    local, _ = _samples([str(p) for p in shards])
    with ShardServer(shards[0].parent) as server:
        remote, counter = _samples(expand_shards(server.url("shard-{000000..000003}.tar")))
    assert remote == local and len(local) == 480
    assert counter == {}


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no_range"])
def test_a_dropped_connection_resumes_where_it_broke(shards, ranges):
    local, _ = _samples([str(shards[0])])
    with ShardServer(shards[0].parent, ranges=ranges) as server:
        name = shards[0].name
        server.faults[name] = [("drop", 100_000), ("drop", 250_000)]
        remote, counter = _samples([server.url(name)], RetryPolicy(**NO_WAIT))
        sent = [r for n, r in server.requests if n == name]
    assert remote == local
    assert counter["retried_reads"] == 2 and "unreadable_shard_or_member" not in counter
    if ranges:  # the retries asked for the rest of the file only
        assert sent == [None, "bytes=100000-", "bytes=350000-"]  # 100k, then 250k more
    else:  # the whole file again, the bytes already read dropped
        assert len(sent) == 3


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_retried(shards, status):
    local, _ = _samples([str(shards[1])])
    with ShardServer(shards[0].parent) as server:
        server.faults[shards[1].name] = [status, status]
        remote, counter = _samples([server.url(shards[1].name)], RetryPolicy(**NO_WAIT))
    assert remote == local and counter["retried_reads"] == 2


def test_a_missing_shard_is_counted_and_the_stream_goes_on(shards):
    local, _ = _samples([str(shards[2])])
    with ShardServer(shards[0].parent) as server:
        remote, counter = _samples(
            [server.url("gone.tar"), server.url(shards[2].name)], RetryPolicy(**NO_WAIT)
        )
        assert [n for n, _ in server.requests].count("gone.tar") == 1  # 404: no retry
    assert remote == local
    assert counter["unreadable_shard_or_member"] == 1 and "retried_reads" not in counter


def test_a_fault_that_outlasts_the_retries_gives_the_shard_up(shards):
    waits = []
    policy = RetryPolicy(retries=3, base_delay=1.0, max_delay=3.0, sleep=waits.append)
    with ShardServer(shards[0].parent) as server:
        server.faults[shards[0].name] = [500] * 10
        remote, counter = _samples([server.url(shards[0].name), server.url(shards[1].name)], policy)
    assert len(remote) == 120  # the second shard, whole
    assert counter["retried_reads"] == 3 and counter["unreadable_shard_or_member"] == 1
    assert all(0 <= w <= min(3.0, 2**i) for i, w in enumerate(waits))  # backoff with jitter


def test_pipe_shards_and_a_failing_command(shards, tmp_path):
    local, _ = _samples([str(shards[0])])
    remote, counter = _samples([f"pipe:cat {shards[0]}"])
    assert remote == local and counter == {}
    # a command that fails on its first run (after writing part of the shard), then works
    flag = tmp_path / "failed_once"
    script = tmp_path / "flaky.py"
    script.write_text(
        "import os, sys\n"
        f"data = open({str(shards[0])!r}, 'rb').read()\n"
        f"if not os.path.exists({str(flag)!r}):\n"
        f"    open({str(flag)!r}, 'w').close()\n"
        "    sys.stdout.buffer.write(data[:50000]); sys.stdout.flush(); sys.exit(3)\n"
        "sys.stdout.buffer.write(data)\n"
    )
    flaky, counter = _samples([f"pipe:{sys.executable} {script}"], RetryPolicy(**NO_WAIT))
    assert flaky == local and counter["retried_reads"] == 1


def test_urls_are_redacted_in_messages():
    assert (
        redact("https://user:secret@host:8080/a/b.tar?X-Amz-Signature=abc&X-Amz-Credential=k")
        == "https://host:8080/a/b.tar"
    )
    assert redact("pipe:aws s3 cp s3://bucket/x.tar -") == "pipe:aws ..."
    assert redact("/data/shard.tar") == "/data/shard.tar"


def test_a_shard_stream_counts_its_bytes(shards):
    counter = Counter()
    with ShardServer(shards[0].parent) as server:
        stream = ShardStream(server.url(shards[0].name), RetryPolicy(**NO_WAIT), counter)
        data = stream.read()
    assert data == shards[0].read_bytes() and stream.offset == len(data)


def test_remote_patterns_expand_without_touching_the_network(tmp_path):
    urls = expand_shards("https://127.0.0.1:9/data/shard-{00..02}.tar,pipe:cat {a,b}.tar")
    assert urls == [
        "https://127.0.0.1:9/data/shard-00.tar",
        "https://127.0.0.1:9/data/shard-01.tar",
        "https://127.0.0.1:9/data/shard-02.tar",
        "pipe:cat {a,b}.tar",
    ]
    with pytest.raises(ConfigError, match="do not exist"):
        expand_shards(f"{tmp_path}/missing.tar")
    assert shutil.which("cat")


def test_braces_with_commas_and_unbalanced_braces(shards):
    folder = shards[0].parent
    assert expand_shards(f"{folder}/shard-00000{{0,1}}.tar,{shards[3]}") == [
        str(shards[0]),
        str(shards[1]),
        str(shards[3]),
    ]
    with pytest.raises(ConfigError, match="unbalanced braces"):
        expand_shards(f"{folder}/shard-{{0.tar")


def _train(demo_data, run, shards, steps, resume=False, extra=()):
    from conftest import tiny_overrides
    from mclip.config import load_config
    from mclip.train.trainer import train
    from test_resume import DEMO

    cfg = load_config(
        DEMO,
        tiny_overrides(demo_data, run)
        + [
            f"data.train_shards={shards}",
            f"train.steps={steps}",
            "train.save_every=2",
            "train.log_every=1",
            "train.keep_checkpoints=10",
            *extra,
        ],
    )
    return train(cfg, resume=resume, quiet=True)


def test_training_on_http_shards_equals_local_and_resumes_exactly(demo_data, tmp_path, shards):
    """The same shards over HTTP (with dropped connections on the way) and on disk give the same
    loss at every step and the same weights and Adam state; a run resumed on HTTP shards takes
    the uninterrupted run's steps."""
    from test_resume import _assert_same_final_state, _losses

    local = tmp_path / "local"
    _train(demo_data, local, f"{shards[0].parent}/shard-{{000000..000003}}.tar", 6)
    with ShardServer(shards[0].parent) as server:
        for shard in shards:  # whichever shards the 6 steps read, each breaks once
            server.faults[shard.name] = [("drop", 70_000) if shard.name < shards[2].name else 503]
        remote = tmp_path / "remote"
        spec = server.url("shard-{000000..000003}.tar")
        _train(demo_data, remote, spec, 6, extra=["data.retries=3"])
        crashed = tmp_path / "crashed"
        shutil.copytree(remote, crashed)
        for checkpoint in (crashed / "checkpoints").iterdir():
            if int(checkpoint.name.split("_")[1]) > 2:
                shutil.rmtree(checkpoint)
        _train(demo_data, crashed, spec, 6, resume=True)
    assert _losses(remote) == _losses(local)
    _assert_same_final_state(
        local / "checkpoints" / "step_0000006", remote / "checkpoints" / "step_0000006"
    )
    assert _losses(crashed) == _losses(local)
    _assert_same_final_state(
        local / "checkpoints" / "step_0000006", crashed / "checkpoints" / "step_0000006"
    )
    from conftest import log_records

    skipped = next(r for r in log_records(remote) if r.get("event") == "end")["skipped"]
    assert skipped.get("retried_reads", 0) >= 1 and "unreadable_shard_or_member" not in skipped


def test_the_next_remote_shard_is_fetched_while_one_is_decoded(shards):
    with ShardServer(shards[0].parent) as server:
        counter = SkipCounter()
        samples = iter_raw_samples([server.url(p.name) for p in shards[:3]], counter)
        next(samples)  # the first sample of the first shard
        asked = [name for name, _ in server.requests]
        assert asked == [shards[0].name, shards[1].name]  # the second is on its way already
        rest = list(samples)
    assert len(rest) == 3 * 120 - 1 and counter == {}


def test_a_response_slower_than_the_timeout_is_retried(shards):
    local, _ = _samples([str(shards[0])])
    with ShardServer(shards[0].parent) as server:
        server.faults[shards[0].name] = [("slow", 1.0)]
        remote, counter = _samples(
            [server.url(shards[0].name)], RetryPolicy(timeout=0.3, **NO_WAIT)
        )
    assert remote == local and counter["retried_reads"] >= 1


def test_evaluation_shards_over_http_score_as_local(demo_data):
    """Labelled evaluation shards read over HTTP give the local numbers; a data error names the
    shard without its credentials."""
    from conftest import tiny_model_config
    from mclip.data.shards import DataError
    from mclip.eval.runner import run_tasks
    from mclip.eval.suite import make_task
    from mclip.models.adapters.native import NativeAdapter
    from mclip.models.dual import DualEncoder

    cfg = tiny_model_config()
    model = NativeAdapter(DualEncoder(cfg.model), cfg, name="tiny")

    def task(images):
        return make_task(
            {
                "name": "shapes",
                "kind": "zeroshot_classification",
                "languages": ["en", "de"],
                "images": images,
                "class_texts": str(demo_data / "classnames"),
                "dataset": "demo_shapes",
            },
            demo_data,
            "test",
        )

    local = run_tasks(model, [task(str(demo_data / "eval"))], bootstrap=0)["shapes"]
    with ShardServer(demo_data / "eval") as server:
        remote = run_tasks(model, [task(server.url("shard-000000.tar"))], bootstrap=0)["shapes"]
    for lang in ("en", "de"):
        assert remote["languages"][lang]["acc@1"] == local["languages"][lang]["acc@1"]
        assert remote["languages"][lang]["samples"] == local["languages"][lang]["samples"]
    from mclip.data.pipeline import TrainStream
    from mclip.models.dual import ImageTransform

    with ShardServer(demo_data / "eval") as server:
        url = server.url("gone.tar").replace("http://", "http://user:secret@") + "?sig=abc"
        stream = TrainStream(
            [url], ImageTransform(32, [0.5] * 3, [0.5] * 3), None, batch_size=4, retries=0
        )
        with pytest.raises(DataError) as error:
            next(iter(stream))
    assert "gone.tar" in str(error.value) and "secret" not in str(error.value)
    assert "sig=abc" not in str(error.value)


def test_parallel_sentences_from_http_shards_equal_the_local_ones(shards):
    """``mclip data parallel`` reads its caption shards through the same remote reader."""
    from mclip.data.parallel import parallel_from_shards

    local = parallel_from_shards([str(p) for p in shards[:2]], "en", ["de", "sw"])
    with ShardServer(shards[0].parent) as server:
        server.faults[shards[1].name] = [503, ("drop", 5000)]
        remote = parallel_from_shards(
            expand_shards(server.url("shard-{000000..000001}.tar")), "en", ["de", "sw"]
        )
    assert remote[0] == local[0] and len(local[0]) > 0
    assert remote[1] == {**local[1], "retried_reads": 2}
