"""Teacher learning: a student text tower learns a teacher's text space from parallel text.

Checked: the parallel TSV reader and the pairs made from caption shards; the step against the
dense full batch (MSE and InfoNCE; gradient cache; 2 gloo ranks); and a run end to end: the
composite model keeps the teacher's image tower bit for bit, evaluates like any mclip model, and
resumes exactly.
"""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mclip.config import ConfigError, config_from_dict, load_config
from mclip.data.parallel import parallel_from_shards, read_parallel_tsv, write_parallel_tsv
from mclip.data.shards import DataError, expand_shards
from mclip.losses.gather import make_gather_groups
from mclip.losses.reference import infonce_reference
from mclip.models.adapters import load_model
from mclip.models.dual import DualEncoder
from mclip.train.checkpoint import latest_checkpoint, list_checkpoints
from mclip.train.distributed import average_gradients
from mclip.train.teacher_learning import (
    TeacherLearningObjective,
    pair_order,
    teacher_learning_gradients,
)
from mclip.train.trainer import train
from conftest import on_gloo_ranks
from test_distributed import _close
from test_resume import DEMO, _assert_same_final_state, _losses, _overrides

CPU = torch.device("cpu")
LOCAL = 4


def test_parallel_tsv_round_trip_and_bad_lines(tmp_path):
    path = write_parallel_tsv(
        [("a red circle", "ein roter\tKreis", "de"), ("a star", "une étoile", "fr")],
        tmp_path / "p.tsv",
    )
    text = path.read_text() + "only two\tfields\n\tempty source\tde\nx\ty\t12\n"
    path.write_text(text)
    pairs, skipped = read_parallel_tsv(path)
    assert pairs == [("a red circle", "ein roter Kreis", "de"), ("a star", "une étoile", "fr")]
    assert skipped == {"malformed_parallel_line": 2, "unknown_language": 1}
    (tmp_path / "bad.tsv").write_text("en\tde\nx\ty\n")
    with pytest.raises(DataError, match="header"):
        read_parallel_tsv(tmp_path / "bad.tsv")
    with pytest.raises(DataError, match="mclip data parallel"):
        read_parallel_tsv(tmp_path / "missing.tsv")


def test_pairs_from_shards_pair_captions_of_the_same_image(demo_data):
    from mclip.data.demo_language import LANGUAGES

    shards = expand_shards(str(demo_data / "train"))[:1]
    pairs, _ = parallel_from_shards(shards, "en", ["de", "ja"], per_language=2)
    assert len(pairs) == 120 * 2 * 2 and {lang for _, _, lang in pairs} == {"de", "ja"}
    owners = {}  # caption -> the classes it describes
    for colour, shape in [
        (c, s)
        for c in ("red", "green", "blue", "yellow", "purple", "orange")
        for s in ("circle", "square", "triangle", "star")
    ]:
        for lang in ("en", "de", "ja"):
            for caption in LANGUAGES[lang].captions(colour, shape):
                owners.setdefault(caption, set()).add((colour, shape))
    assert all(owners[source] & owners[translation] for source, translation, _ in pairs)


def test_source_pairs_keep_the_source_as_frequent_as_a_target_language():
    from mclip.train.teacher_learning import source_pairs

    pairs = [(f"en {i}", f"{lang} {i}", lang) for i in range(30) for lang in ("de", "fr", "sw")]
    extra = source_pairs(pairs)
    assert len(extra) == 30 and all(s == t and lang == "source" for s, t, lang in extra)
    assert {s for s, _, _ in extra} == {f"en {i}" for i in range(30)}


def test_pair_order_is_a_pure_function_of_seed_and_step():
    first_pass = [i for step in range(5) for i in pair_order(10, 3, step, 2)]
    assert sorted(first_pass) == list(range(10))
    assert pair_order(10, 3, 7, 4) == pair_order(10, 3, 7, 4) != pair_order(10, 4, 7, 4)
    assert len(set(pair_order(10, 3, 2, 4))) == 4  # a batch across two passes has no repeat


def _model():
    cfg = config_from_dict(
        {
            "model": {
                "embed_dim": 16,
                "text": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 64,
                    "max_length": 40,
                    "dropout": 0.0,
                },
            }
        }
    )
    torch.manual_seed(0)
    return DualEncoder(cfg.model)


def _inputs(n):
    g = torch.Generator().manual_seed(5)
    texts = [
        f"Übersetzung {i} " + "xy" * int(torch.randint(0, 6, (1,), generator=g)) for i in range(n)
    ]
    return F.normalize(torch.randn(n, 16, generator=g), dim=-1), _model().tokenize(texts)


def _step(kind, teacher, tokens, micro, groups=None, world=1):
    model = _model()
    scale = torch.nn.Parameter(torch.tensor(2.0))
    objective = TeacherLearningObjective(kind, chunk=3, groups=groups)
    loss = teacher_learning_gradients(model, objective, scale, teacher, tokens, micro, CPU)
    trained = torch.nn.ModuleList([model])
    trained.register_parameter("scale", scale)
    if world > 1:
        average_gradients(trained, world)
    grads = {n: p.grad.clone() for n, p in trained.named_parameters() if p.grad is not None}
    return loss.item(), grads


def _reference(kind, teacher, tokens):
    model = _model()
    scale = torch.nn.Parameter(torch.tensor(2.0))
    student = model.encode_text(tokens)
    loss = (
        (student - teacher).pow(2).sum(1).mean()
        if kind == "mse"
        else infonce_reference(teacher, student, scale)
    )
    loss.backward()
    trained = torch.nn.ModuleList([model])
    trained.register_parameter("scale", scale)
    return loss.item(), {
        n: p.grad.clone() for n, p in trained.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("kind", ["mse", "infonce"])
@pytest.mark.parametrize("micro", [1, 3])
def test_step_equals_the_dense_full_batch(kind, micro):
    teacher, tokens = _inputs(2 * LOCAL)
    loss, grads = _step(kind, teacher, tokens, micro)
    ref_loss, ref_grads = _reference(kind, teacher, tokens)
    assert loss == pytest.approx(ref_loss, rel=1e-5) and _close(grads, ref_grads)
    assert ("scale" in grads) == (kind == "infonce")


def _rank_results(rank, world):
    teacher, tokens = _inputs(world * LOCAL)
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    return {
        (kind, micro): _step(
            kind,
            teacher[rows],
            {k: v[rows] for k, v in tokens.items()},
            micro,
            make_gather_groups(world),
            world,
        )
        for kind in ("mse", "infonce")
        for micro in (1, 2)
    }


@pytest.mark.slow
def test_two_gloo_ranks_equal_the_full_batch(tmp_path):
    results = on_gloo_ranks(_rank_results, tmp_path)
    teacher, tokens = _inputs(2 * LOCAL)
    for (kind, micro), (loss, grads) in results.items():
        ref_loss, ref_grads = _reference(kind, teacher, tokens)
        assert loss == pytest.approx(ref_loss, rel=1e-5), (kind, micro)
        assert _close(grads, ref_grads), (kind, micro)


@pytest.fixture(scope="module")
def english_teacher(demo_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("english") / "run"
    train(
        load_config(DEMO, _overrides(demo_data, run, 3, save_every=3) + ["data.languages=[en]"]),
        quiet=True,
    )
    pairs, _ = parallel_from_shards(expand_shards(str(demo_data / "train"))[:1], "en", ["de", "sw"])
    return run, write_parallel_tsv(pairs, run.parent / "parallel.tsv")


def _student(demo_data, run, teacher, parallel, loss="mse"):
    return load_config(
        DEMO,
        _overrides(demo_data, run, 5)
        + [
            f"teacher_learning.teacher={teacher}",
            f"teacher_learning.parallel={parallel}",
            f"teacher_learning.loss={loss}",
            "model.embed_dim=16",
        ],
    )  # the teacher's (64) wins


@pytest.mark.parametrize("loss", ["mse", "infonce"])
def test_run_pairs_the_teachers_image_tower_with_a_taught_text_tower_and_resumes_exactly(
    demo_data, tmp_path, english_teacher, loss
):
    teacher, parallel = english_teacher
    full = tmp_path / "full"
    train(_student(demo_data, full, teacher, parallel, loss), quiet=True)
    student = load_file(str(latest_checkpoint(full) / "model.safetensors"))
    source = load_file(str(latest_checkpoint(teacher) / "model.safetensors"))
    image_keys = [k for k in source if k.startswith("image.")] + ["logit_scale"]
    assert image_keys and all(torch.equal(student[k], source[k]) for k in image_keys)
    assert not torch.equal(student["text.proj.weight"], source["text.proj.weight"])
    model = load_model(str(full))  # the composite loads and encodes like any mclip model
    assert model.embed_dim == 64 and model.encode_text(["ein roter Kreis"]).shape == (1, 64)
    records = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    assert start["mode"] == "teacher_learning" and start["pairs"] > 240

    expected = _losses(full)
    run = tmp_path / "crashed"
    shutil.copytree(full, run)
    for ckpt in list_checkpoints(run):
        if int(ckpt.name.split("_")[1]) > 3:
            shutil.rmtree(ckpt)
    train(_student(demo_data, run, teacher, parallel, loss), resume=True, quiet=True)
    assert _losses(run) == expected
    _assert_same_final_state(latest_checkpoint(full), latest_checkpoint(run))


def test_teacher_learning_config_errors():
    with pytest.raises(ConfigError, match="teacher_learning.parallel"):
        load_config(DEMO, ["teacher_learning.teacher=runs/x"])
    with pytest.raises(ConfigError, match="valid choices: mse, infonce"):
        load_config(DEMO, ["teacher_learning.loss=kl"])
    with pytest.raises(ConfigError, match="two stages"):
        load_config(
            DEMO,
            [
                "teacher_learning.teacher=runs/x",
                "teacher_learning.parallel=p.tsv",
                "distill.teachers=[{model: runs/x}]",
                "distill.similarity_weight=1",
            ],
        )


def test_a_student_embedding_size_other_than_the_teachers_is_a_config_error(
    demo_data, tmp_path, english_teacher
):
    """With the student's own image tower, the text embedding sizes must match (named error,
    before any training), not a shape error from inside the loss."""
    teacher, parallel = english_teacher
    cfg = _student(demo_data, tmp_path / "run", teacher, parallel)
    cfg.teacher_learning.image_tower_from_teacher = False
    with pytest.raises(
        ConfigError, match="model.embed_dim is 16 but the teacher .* 64 dim.*set model.embed_dim=64"
    ):
        train(cfg, quiet=True)


def test_ctrl_c_finishes_the_step_and_writes_a_checkpoint(
    demo_data, tmp_path, english_teacher, monkeypatch
):
    """Teacher learning honours SIGINT / SIGTERM as image-text training does."""
    import os
    import signal

    import mclip.train.teacher_learning as module
    from mclip.errors import TrainingInterrupted

    teacher, parallel = english_teacher
    real, calls = module.teacher_learning_gradients, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C arrives during the second step
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "teacher_learning_gradients", interrupted)
    run = tmp_path / "run"
    cfg = _student(demo_data, run, teacher, parallel)
    cfg.train.save_every = 100
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg, quiet=True)
    assert stop.value.step == 2 and stop.value.checkpoint.name == "step_0000002"
    assert [c.name for c in list_checkpoints(run)] == ["step_0000002"]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert next(r for r in records if r.get("event") == "end")["stopped_by"] == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
