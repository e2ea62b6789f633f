"""Output files are written whole or not at all, and an unwritable output folder is one line
before any work: a full disk while ``mclip eval`` / ``mclip report`` write leaves the earlier
files intact and the numbers printed; ``eval --out``, ``report --out`` and ``train.out_dir`` on a
folder that cannot be written are refused up front."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli, tiny_model_config, tiny_overrides
from mclip.cli import main
from mclip.outputs import OutputError, check_writable, write_text_atomically
from test_report import language_codes, synthetic_report

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "eval_suites" / "demo.yaml"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mclip.models.dual import DualEncoder

    cfg = tiny_model_config()
    directory = tmp_path_factory.mktemp("model") / "tiny"
    DualEncoder(cfg.model).save(directory, cfg)
    return directory


def _disk_full_on(monkeypatch, name: str) -> None:
    """Writing a file called ``name`` (under any temporary name) writes half, then fails as a
    full disk does."""
    real = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name.startswith(f".{name}."):
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("mclip: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_full_disk_during_eval_keeps_the_earlier_results_and_prints_the_table(
    demo_data, model_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "eval"
    args = [
        "eval",
        "--model",
        str(model_dir),
        "--suite",
        str(SUITE),
        "--data-root",
        str(demo_data),
        "--limit",
        "8",
        "--bootstrap",
        "0",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    earlier = (out / "results.json").read_bytes()
    capsys.readouterr()
    _disk_full_on(monkeypatch, "results.json")
    assert main([*args, "--seed", "3"]) == 2
    captured = capsys.readouterr()
    assert "| **mean** |" in captured.out  # the numbers are still shown
    _one_error_line(captured.err, str(out / "results.json"), "No space left")
    assert (out / "results.json").read_bytes() == earlier  # whole, and the earlier one
    assert json.loads(earlier)["model"] == str(model_dir)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_during_report_keeps_the_earlier_files(tmp_path, monkeypatch, capsys):
    langs = language_codes(3)
    (tmp_path / "a.json").write_text(json.dumps(synthetic_report("A", langs, seed=0)))
    (tmp_path / "b.json").write_text(json.dumps(synthetic_report("B", langs, seed=1)))
    files = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    out = tmp_path / "cmp"
    assert main(["report", *files, "--out", str(out), "--format", "markdown"]) == 0
    earlier = (out / "comparison.md").read_bytes()
    capsys.readouterr()
    _disk_full_on(monkeypatch, "comparison.md")
    assert main(["report", *files, "--out", str(out), "--format", "markdown", "--seed", "2"]) == 2
    captured = capsys.readouterr()
    assert "| B − A |" in captured.out
    _one_error_line(captured.err, str(out / "comparison.md"))
    assert (out / "comparison.md").read_bytes() == earlier


def test_write_text_atomically_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    write_text_atomically(path, "first")
    write_text_atomically(path, "second")
    assert path.read_text() == "second"
    _disk_full_on(monkeypatch, "x.json")
    with pytest.raises(OutputError, match="x.json"):
        write_text_atomically(path, "third, never whole")
    assert path.read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


@pytest.fixture(params=["below_a_file", "read_only"])
def unwritable(request, tmp_path):
    """A folder no output can go to: below a regular file, or a read-only folder (chmod as a
    user; as root, whom permissions do not stop, the immutable attribute)."""
    if request.param == "below_a_file":
        (tmp_path / "file").write_text("x")
        yield tmp_path / "file" / "out"
        return
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder read-only as root here: {done.stderr!r}")
        yield folder / "out"
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder / "out"
        folder.chmod(0o755)


def test_check_writable_names_the_option(unwritable):
    with pytest.raises(OutputError, match=r"^--out '.*out' is not a writable folder"):
        check_writable(unwritable, "--out")


@pytest.mark.slow
def test_unwritable_eval_out_is_one_line_before_any_work(demo_data, model_dir, unwritable):
    result = run_cli(
        "eval",
        "--model",
        model_dir,
        "--suite",
        SUITE,
        "--data-root",
        demo_data,
        "--out",
        unwritable,
    )
    assert result.returncode == 2
    _one_error_line(result.stderr, "--out", str(unwritable))
    assert "embedded" not in result.stderr and result.stdout == ""  # nothing was evaluated


@pytest.mark.slow
def test_unwritable_report_out_is_one_line(tmp_path, unwritable):
    (tmp_path / "a.json").write_text(json.dumps(synthetic_report("A", language_codes(2))))
    result = run_cli("report", tmp_path / "a.json", "--out", unwritable)
    assert result.returncode == 2
    _one_error_line(result.stderr, "--out", str(unwritable))
    assert result.stdout == ""


@pytest.mark.slow
def test_unwritable_train_out_dir_is_one_line_before_any_work(demo_data, unwritable):
    result = run_cli(
        "train", "--config", ROOT / "configs" / "demo.yaml", *tiny_overrides(demo_data, unwritable)
    )
    assert result.returncode == 2
    _one_error_line(result.stderr, "train.out_dir", str(unwritable))


def test_two_reports_of_one_model_write_every_clip_benchmark_file(tmp_path, capsys):
    langs = language_codes(2)
    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / f"{name}.json").write_text(
            json.dumps(synthetic_report("runs/demo", langs, seed=seed))
        )
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "report",
                str(tmp_path / "a.json"),
                str(tmp_path / "b.json"),
                "--out",
                str(out),
                "--format",
                "clip_benchmark",
            ]
        )
        == 0
    )
    files = sorted((out / "clip_benchmark").glob("*.json"))
    assert len(files) == 2 * 2 * 2  # 2 reports x 2 tasks x 2 languages, none overwritten
    assert sum("-A_" in f.name for f in files) == 4 and sum("-B_" in f.name for f in files) == 4
    written = int(capsys.readouterr().out.rsplit("wrote ", 1)[1].split()[0])
    assert written == len(list(out.rglob("*.*")))


def test_reports_whose_clip_benchmark_names_clash_are_told_apart(tmp_path, capsys):
    langs = language_codes(2)
    for name, model in (("a", "runs/demo"), ("b", "runs_demo"), ("c", "other")):
        (tmp_path / f"{name}.json").write_text(json.dumps(synthetic_report(model, langs)))
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "report",
                *(str(tmp_path / f"{n}.json") for n in "abc"),
                "--out",
                str(out),
                "--format",
                "clip_benchmark",
            ]
        )
        == 0
    )
    files = sorted(p.name for p in (out / "clip_benchmark").glob("*.json"))
    assert len(files) == 3 * 2 * 2  # 'runs/demo' and 'runs_demo' have one slug: tagged A and B
    assert sum("-A_" in f for f in files) == 4 and sum("-B_" in f for f in files) == 4
    assert not any("-C_" in f for f in files)  # no clash: the plain CLIP_benchmark name


@pytest.mark.slow
def test_unwritable_cache_is_one_line_before_any_work(demo_data, model_dir, tmp_path, unwritable):
    result = run_cli(
        "eval",
        "--model",
        model_dir,
        "--suite",
        SUITE,
        "--data-root",
        demo_data,
        "--out",
        tmp_path / "eval",
        "--cache",
        unwritable,
    )
    assert result.returncode == 2
    _one_error_line(result.stderr, "--cache", str(unwritable))
    assert "embedded" not in result.stderr and not (tmp_path / "eval" / "results.json").exists()
