"""Evaluation during training (mclip.train.periodic_eval): numbers, best model, config errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from mclip.cli import main
from mclip.config import ConfigError, load_config
from mclip.eval.suite import Suite, make_task
from mclip.models.adapters import load_model
from mclip.models.dual import DualEncoder
from mclip.train.logger import TrainLogger
from mclip.train.periodic_eval import (
    BEST_DIR,
    BEST_FILE,
    TrainingEvaluator,
    headline_numbers,
    metric_names,
)

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "eval_suites" / "demo.yaml"
DEMO_NAMES = [
    "shapes/acc@1",
    "shapes/acc@5",
    "shapes/mean_per_class_recall",
    "shapes_retrieval/text_to_image_R@1",
    "shapes_retrieval/text_to_image_R@5",
    "shapes_retrieval/image_to_text_R@1",
    "shapes_retrieval/image_to_text_R@5",
    "shape_topics/topic_acc@1",
    "shape_topics/text_only_topic_acc@1",
    "shape_bitext/bitext_to_pivot_acc@1",
    "shape_bitext/bitext_from_pivot_acc@1",
    "shape_bitext/bitext_acc@1",
    "shapes_image_to_image/image_to_image_R@1",
    "shapes_image_to_image/image_to_image_R@5",
    "shapes_image_to_image/image_to_image_mAP",
    "caption_to_caption/text_to_text_R@1",
    "caption_to_caption/text_to_text_mAP",
    "caption_to_caption/text_to_pivot_text_R@1",
    "caption_to_caption/text_to_pivot_text_mAP",
]


def eval_config(demo_data: Path, tmp_path: Path, *extra: str):
    """The tiny training config with the demo suite on two languages every 3 steps."""
    return load_config(
        ROOT / "configs" / "demo.yaml",
        [
            *tiny_overrides(demo_data, tmp_path / "run"),
            f"eval.suite={SUITE}",
            f"eval.data_root={demo_data}",
            "eval.every=3",
            "eval.languages=[en,de]",
            *extra,
        ],
    )


def state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_equals_mclip_eval_of_the_saved_best(demo_data, tmp_path, capsys):
    cfg = eval_config(demo_data, tmp_path, "model.text.dropout=0.1")  # train mode would show
    torch.manual_seed(0)
    model = DualEncoder(cfg.model)
    model.train()
    model.image.eval()  # a mixed state (train.freeze_batchnorm) that must come back as it was
    evaluator = TrainingEvaluator(cfg)
    assert evaluator.names == DEMO_NAMES and evaluator.metric == "shapes/acc@1"  # the default
    rng = torch.get_rng_state()
    numbers = evaluator.evaluate(model, step=3)
    assert list(numbers) == DEMO_NAMES  # the names predicted from the suite are what it produces
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model.text.training and not model.image.training
    assert all(p.grad is None for p in model.parameters())
    assert set(evaluator.last_results["shapes"]["languages"]) == {"en", "de"}

    assert evaluator.keep_best(model, cfg, 3, numbers[evaluator.metric], numbers)
    best = tmp_path / "run" / BEST_DIR
    assert (
        main(
            [
                "eval",
                "--model",
                str(best),
                "--suite",
                str(SUITE),
                "--data-root",
                str(demo_data),
                "--languages",
                "en,de",
                "--bootstrap",
                "0",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    report = json.loads((tmp_path / "cli" / "results.json").read_text())
    expected = {
        f"{name}/{metric}": value
        for name, task in report["tasks"].items()
        for metric, value in task["mean"].items()
    }
    assert numbers == expected
    record = json.loads((best / BEST_FILE).read_text())
    assert record == {
        "metric": "shapes/acc@1",
        "value": numbers["shapes/acc@1"],
        "step": 3,
        "suite": "demo",
        "numbers": numbers,
    }


def test_limit_and_batch_size_match_mclip_eval(demo_data, tmp_path, capsys):
    cfg = eval_config(
        demo_data, tmp_path, "eval.limit=10", "eval.languages=[sw]", "eval.batch_size=4"
    )
    torch.manual_seed(1)
    model = DualEncoder(cfg.model)
    numbers = TrainingEvaluator(cfg).evaluate(model, step=3)
    model.save(tmp_path / "saved", cfg)
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "saved"),
                "--suite",
                str(SUITE),
                "--data-root",
                str(demo_data),
                "--languages",
                "sw",
                "--limit",
                "10",
                "--bootstrap",
                "0",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    report = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert report["tasks"]["shapes"]["languages"]["sw"]["n_images"] == 10
    assert numbers == {
        f"{name}/{metric}": value
        for name, task in report["tasks"].items()
        for metric, value in task["mean"].items()
    }


def test_best_is_replaced_only_when_the_metric_improves(demo_data, tmp_path, monkeypatch):
    cfg = eval_config(demo_data, tmp_path, "eval.metric=shapes_retrieval/text_to_image_R@1")
    torch.manual_seed(0)
    model = DualEncoder(cfg.model)
    evaluator = TrainingEvaluator(cfg)
    run, best = tmp_path / "run", tmp_path / "run" / BEST_DIR

    def bump():
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.01)

    def on_disk() -> tuple[dict, dict]:
        return json.loads((best / BEST_FILE).read_text()), state(load_model(str(best)).model)

    assert evaluator.keep_best(model, cfg, 10, 0.5)
    at_10 = state(model)
    bump()
    assert not evaluator.keep_best(model, cfg, 20, 0.4)
    assert not evaluator.keep_best(model, cfg, 30, 0.5)  # a tie keeps the earlier model
    assert not evaluator.keep_best(model, cfg, 35, float("nan"))
    record, weights = on_disk()
    assert (record["step"], record["value"], record["metric"]) == (
        10,
        0.5,
        "shapes_retrieval/text_to_image_R@1",
    )
    assert same_weights(weights, at_10) and (evaluator.best_step, evaluator.best_value) == (10, 0.5)

    def broken_save(self, directory, config):  # dies half-way through writing the new best
        Path(directory).mkdir(parents=True)
        (Path(directory) / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(DualEncoder, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        evaluator.keep_best(model, cfg, 40, 0.9)
    monkeypatch.undo()
    record, weights = on_disk()
    assert record["step"] == 10 and same_weights(weights, at_10) and evaluator.best_value == 0.5

    assert evaluator.keep_best(model, cfg, 50, 0.9)
    record, weights = on_disk()
    assert record["step"] == 50 and same_weights(weights, state(model))
    assert sorted(p.name for p in run.iterdir()) == [BEST_DIR]  # no temporary directory left

    resumed = TrainingEvaluator(cfg, resume=True)
    assert (resumed.best_step, resumed.best_value) == (50, 0.9)
    assert not resumed.keep_best(model, cfg, 60, 0.8)
    assert TrainingEvaluator(cfg).best_value is None  # a fresh run starts over


def test_a_crash_between_the_renames_is_repaired(demo_data, tmp_path):
    cfg = eval_config(demo_data, tmp_path)
    model = DualEncoder(cfg.model)
    evaluator = TrainingEvaluator(cfg)
    run = tmp_path / "run"
    assert evaluator.keep_best(model, cfg, 3, 0.2)
    # crash after the old best was moved aside, with the new one complete: the new one wins
    shutil.copytree(run / BEST_DIR, run / ".tmp-best")
    (run / ".tmp-best" / BEST_FILE).write_text(
        json.dumps({"metric": "shapes/acc@1", "value": 0.3, "step": 6})
    )
    (run / BEST_DIR).rename(run / ".old-best")
    assert TrainingEvaluator(cfg, resume=True).best_step == 6
    assert sorted(p.name for p in run.iterdir()) == [BEST_DIR]
    # crash with the new one unfinished (no best.json yet): the old one comes back
    (run / BEST_DIR).rename(run / ".old-best")
    (run / ".tmp-best").mkdir()
    (run / ".tmp-best" / "model.safetensors").write_bytes(b"half")
    assert TrainingEvaluator(cfg, resume=True).best_step == 6
    assert sorted(p.name for p in run.iterdir()) == [BEST_DIR]
    load_model(str(run / BEST_DIR))


@pytest.mark.parametrize(
    "metric,hint",
    [
        ("shapes/acc1", "Did you mean 'shapes/acc@1'?"),
        ("shape/acc@1", "Did you mean 'shapes/acc@1'?"),
        ("shapes/acc@10", "Valid: "),
        ("shapes/n_classes", "Valid: "),
        ("mean/acc@1", "Valid: "),
    ],
)
def test_unknown_metric_is_a_config_error_listing_the_valid_names(
    demo_data, tmp_path, metric, hint
):
    cfg = eval_config(demo_data, tmp_path, f"eval.metric={metric}")
    with pytest.raises(ConfigError) as error:
        TrainingEvaluator(cfg)
    message = str(error.value)
    assert f"config key 'eval.metric' is '{metric}'" in message and hint in message
    assert "Valid: " + ", ".join(DEMO_NAMES) in message


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["eval.every=10"], r"'eval.every' is 10 but 'eval.suite' is empty"),
        (["eval.suite=x.yaml", "eval.every=-1"], r"'eval.every' must be >= 0"),
        (["eval.metric=acc@1"], r"'eval.metric' is 'acc@1'; give TASK/METRIC"),
        (["eval.limit=0"], r"'eval.limit' must be > 0"),
        (["eval.bootstrap=-5"], r"'eval.bootstrap' must be >= 0"),
        (["eval.batch_size=0"], r"'eval.batch_size' must be > 0"),
        (["eval.languages=[en, '']"], r"'eval.languages' has an empty code"),
        (["eval.evry=3"], r"unknown config key 'eval.evry'. Did you mean 'eval.every'"),
    ],
)
def test_eval_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "demo.yaml", overrides)


def test_missing_suite_or_data_is_named_before_training(demo_data, tmp_path):
    cfg = eval_config(demo_data, tmp_path, f"eval.data_root={tmp_path / 'nowhere'}")
    with pytest.raises(
        ConfigError,
        match=r"task 'shapes': images .* does not exist; config key "
        r"'eval.data_root'",
    ):
        TrainingEvaluator(cfg)
    cfg = eval_config(demo_data, tmp_path, f"eval.suite={tmp_path / 'none.yaml'}")
    with pytest.raises(ConfigError, match=r"suite file .* does not exist"):
        TrainingEvaluator(cfg)


def test_due_steps_and_off(demo_data, tmp_path):
    every_3 = TrainingEvaluator(eval_config(demo_data, tmp_path, "train.steps=7"))
    assert [s for s in range(8) if every_3.due(s)] == [3, 6, 7]  # and after the last step
    off = TrainingEvaluator(eval_config(demo_data, tmp_path, "eval.every=0"))
    assert not off.enabled and not any(off.due(s) for s in range(10))
    with pytest.raises(ConfigError, match="off"):
        off.evaluate(DualEncoder(off.cfg.model), 3)
    default = TrainingEvaluator(load_config(ROOT / "configs" / "demo.yaml"))
    assert not default.enabled and default.cfg.eval.bootstrap == 0


def test_names_and_means_over_tasks(tmp_path):
    root = tmp_path
    tasks = [
        make_task(
            {
                "name": "a",
                "kind": "zeroshot_classification",
                "languages": ["en"],
                "images": "x",
                "class_texts": "y",
                "top_k": [1],
            },
            root,
            "t1",
        ),
        make_task(
            {
                "name": "b",
                "kind": "zeroshot_classification",
                "languages": ["en"],
                "images": "x",
                "class_texts": "y",
            },
            root,
            "t2",
        ),
        make_task(
            {
                "name": "r",
                "kind": "retrieval",
                "languages": ["en"],
                "captions": "c",
                "recall_at": [1, 10],
            },
            root,
            "t3",
        ),
    ]
    names = metric_names(Suite("s", tasks))
    assert names == [
        "a/acc@1",
        "a/mean_per_class_recall",
        "b/acc@1",
        "b/acc@5",
        "b/mean_per_class_recall",
        "r/text_to_image_R@1",
        "r/image_to_text_R@1",
        "mean/acc@1",
        "mean/mean_per_class_recall",
    ]
    zs = {"kind": "zeroshot_classification"}
    results = {
        "a": {
            **zs,
            "languages": {
                "en": {"acc@1": 0.2, "mean_per_class_recall": 0.1},
                "de": {"acc@1": 0.4, "mean_per_class_recall": 0.3},
            },
        },
        "b": {
            **zs,
            "languages": {"en": {"acc@1": 0.8, "acc@5": None, "mean_per_class_recall": 0.5}},
        },
    }
    numbers = headline_numbers(results)
    assert numbers == pytest.approx(
        {
            "a/acc@1": 0.3,
            "a/mean_per_class_recall": 0.2,
            "b/acc@1": 0.8,
            "b/mean_per_class_recall": 0.5,
            "mean/acc@1": 0.55,
            "mean/mean_per_class_recall": 0.35,
        }
    )
    assert list(headline_numbers(results, ["mean/acc@1", "b/acc@5", "a/acc@1"])) == [
        "mean/acc@1",
        "a/acc@1",
    ]  # b/acc@5 has no value (fewer classes than 5): absent
    clash = tasks + [
        make_task(
            {
                "name": "mean",
                "kind": "zeroshot_classification",
                "languages": ["en"],
                "images": "x",
                "class_texts": "y",
            },
            root,
            "t4",
        )
    ]
    with pytest.raises(ConfigError, match="task named 'mean'"):
        metric_names(Suite("s", clash))


def test_a_metric_without_a_value_fails_at_the_first_evaluation(demo_data, tmp_path, monkeypatch):
    cfg = eval_config(demo_data, tmp_path, "eval.metric=shapes/acc@5", "eval.limit=4")
    evaluator = TrainingEvaluator(cfg)
    from mclip.train import periodic_eval

    real = periodic_eval.run_suite

    def no_acc5(*args, **kwargs):  # as for a task whose languages all have < 5 classes
        results = real(*args, **kwargs)
        for metrics in results["shapes"]["languages"].values():
            metrics["acc@5"] = None
        return results

    monkeypatch.setattr(periodic_eval, "run_suite", no_acc5)
    with pytest.raises(
        ConfigError,
        match=r"'shapes/acc@5'.*produced at step 3.*Valid: "
        r"shapes/acc@1, shapes/mean_per_class_recall",
    ):
        evaluator.evaluate(DualEncoder(cfg.model), 3)


def test_logger_writes_eval_records(tmp_path):
    logger = TrainLogger(tmp_path, total_steps=10, quiet=True, append=False)
    logger.evaluation(
        5,
        {"shapes/acc@1": 0.25, "shapes/acc@5": 0.5},
        metric="shapes/acc@1",
        best=True,
        seconds=1.5,
    )
    logger.close()
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert record["event"] == "eval" and record["step"] == 5 and record["best"] is True
    assert record["metrics"] == {"shapes/acc@1": 0.25, "shapes/acc@5": 0.5}


_RANK_SCRIPT = """
import json, sys, torch
from mclip.config import load_config
from mclip.models.dual import DualEncoder
from mclip.train.distributed import init_distributed, shutdown_distributed
from mclip.train.periodic_eval import TrainingEvaluator
cfg = load_config(sys.argv[1], sys.argv[3:])
ctx = init_distributed(cfg, torch.device("cpu"))
torch.manual_seed(0)
model = DualEncoder(cfg.model)
evaluator = TrainingEvaluator(cfg, ctx)
numbers = evaluator.evaluate(model, 3)
new = evaluator.keep_best(model, cfg, 3, numbers[evaluator.metric], numbers)
with open(f"{sys.argv[2]}/rank{ctx.rank}.json", "w") as f:
    json.dump({"numbers": numbers, "new": new}, f)
shutdown_distributed(ctx)
"""


@pytest.mark.slow
def test_two_gloo_ranks_evaluate_like_one_process(demo_data, tmp_path):
    overrides = ["eval.batch_size=8", "eval.limit=15", "eval.languages=[en,ja]"]
    cfg = eval_config(demo_data, tmp_path, *overrides)
    torch.manual_seed(0)
    one = TrainingEvaluator(cfg).evaluate(DualEncoder(cfg.model), 3)
    script = tmp_path / "ranks.py"
    script.write_text(_RANK_SCRIPT)
    (tmp_path / "two").mkdir()
    args = tiny_overrides(demo_data, tmp_path / "two_run") + [
        f"eval.suite={SUITE}",
        f"eval.data_root={demo_data}",
        "eval.every=3",
        *overrides,
    ]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    run = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            str(ROOT / "configs" / "demo.yaml"),
            str(tmp_path / "two"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == {"numbers": one, "new": True}
    record = json.loads((tmp_path / "two_run" / BEST_DIR / BEST_FILE).read_text())
    assert record["numbers"] == one and record["step"] == 3
