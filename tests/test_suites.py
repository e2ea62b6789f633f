"""Every shipped evaluation suite parses; suite errors name the task and the fix."""

from pathlib import Path

import pytest

from mclip.config import ConfigError
from mclip.eval.suite import load_suite, make_task, narrow_languages

SUITES = sorted((Path(__file__).resolve().parents[1] / "eval_suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_shipped_suites_load(path, tmp_path):
    suite = load_suite(path, data_root=tmp_path)
    assert suite.tasks
    for task in suite.tasks:
        for key in ("images", "class_texts", "prompts", "captions"):
            value = getattr(task, key)
            assert not value or value.startswith(str(tmp_path)), (task.name, key)
    narrow_languages(suite, ["de", "sw"])
    assert all(task.languages == ["de", "sw"] for task in suite.tasks)


def test_task_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="'kind' must be one of"):
        make_task({"name": "x", "kind": "segmentation"}, tmp_path, "task 1")
    with pytest.raises(ConfigError, match="unknown key.*class_texts"):
        make_task(
            {
                "name": "x",
                "kind": "retrieval",
                "class_texts": "y",
                "captions": "c",
                "languages": ["en"],
            },
            tmp_path,
            "task 1",
        )
    with pytest.raises(ConfigError, match="missing captions"):
        make_task({"name": "x", "kind": "retrieval", "languages": ["en"]}, tmp_path, "task 1")
