"""The documentation: the README is a front page whose links resolve, the site builds with
``mkdocs build --strict`` (broken links, missing pages and API pages fail), and every command
block marked runnable (``<!-- runnable -->`` on the line before its fence) runs on tiny settings.

The harness takes a page's runnable blocks in order, joins continued lines, gives each ``mclip``
command the demo's tiny sizes for what the block does not set itself (:func:`tiny_command`),
and runs them with bash in a temporary directory that holds ``configs/``, ``eval_suites/``,
a tiny ``demo_data/`` and a tiny ``runs/demo`` (what ``bash scripts/demo.sh`` leaves behind), so
a documented command that stops working fails here.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"
README_LINES = 200

# per command: flags or overrides added unless the command sets them itself
TINY = {
    "mclip data demo": [
        "--train",
        "96",
        "--eval-per-class",
        "2",
        "--image-size",
        "32",
        "--shard-size",
        "32",
    ],
    # 128 dimensions: the pages cut 64-dimension prefixes of the demo model
    "mclip train": [
        "data.train_shards=demo_data/train",
        "model.embed_dim=128",
        "model.image.image_size=32",
        "model.text.hidden_size=32",
        "model.text.num_layers=1",
        "model.text.num_heads=2",
        "model.text.intermediate_size=64",
        "data.num_workers=0",
        "data.shuffle_buffer=32",
        "train.batch_size=16",
        "train.steps=4",
        "train.warmup_steps=1",
        "train.log_every=2",
        "train.save_every=4",
        "--quiet",
    ],
    "mclip adapt": ["--steps", "2", "--max-captions", "16", "--batch-size", "8"],
    "mclip eval": ["--bootstrap", "20", "--quiet"],
}


def runnable_blocks(text: str) -> list[str]:
    """The bodies of the fenced blocks that follow a :data:`MARKER` line."""
    return re.findall(rf"{re.escape(MARKER)}\n```[a-z]*\n(.*?)\n```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """A block's commands: continued lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def tiny_command(command: str) -> str:
    """``command`` with :data:`TINY`'s settings for what it does not set (a flag it names, or
    an override key it gives)."""
    for prefix, extra in TINY.items():
        if not command.startswith(prefix + " "):
            continue
        words = shlex.split(command)
        given = {w.split("=", 1)[0] for w in words if "=" in w and not w.startswith("-")}
        given |= {w for w in words if w.startswith("--")}
        added, i = [], 0
        while i < len(extra):
            item = extra[i]
            takes_value = (
                item.startswith("--") and i + 1 < len(extra) and not extra[i + 1].startswith("--")
            )
            key = item.split("=", 1)[0]
            if key not in given:
                added += extra[i : i + 1 + takes_value]
            i += 1 + takes_value
        return command + "".join(f" {shlex.quote(a)}" for a in added)
    return command


def test_the_harness_adds_only_what_a_command_leaves_out():
    block = (
        "mclip train --config configs/demo.yaml train.out_dir=runs/x \\\n"
        "    model.embed_dim=64  # c"
    )
    (command,) = commands(block)
    tiny = tiny_command(command)
    assert "model.embed_dim=64" in tiny and "model.embed_dim=128" not in tiny
    assert "train.steps=4" in tiny and tiny.startswith("mclip train --config")
    assert tiny_command("mclip eval --model m --bootstrap 0").count("--bootstrap") == 1
    assert runnable_blocks(f"x\n{MARKER}\n```bash\nmclip eval a\n```\n```bash\nno\n```") == [
        "mclip eval a"
    ]


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text("utf-8")
    assert len(text.splitlines()) <= README_LINES
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to missing {target}"
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text("utf-8")
    assert "load_model" in api and "tiled_infonce" in api and "open_bitext" in api


def _pages_with_runnable_blocks() -> list[str]:
    """docs/ pages (run after the demo) and the README (run from an empty directory)."""
    pages = sorted(f"docs/{p.name}" for p in DOCS.glob("*.md") if MARKER in p.read_text("utf-8"))
    return pages + ["README.md"] * (MARKER in (ROOT / "README.md").read_text("utf-8"))


def _workspace(root: Path, after_demo: bool) -> Path:
    """configs/ and eval_suites/ in ``root``, with a tiny demo_data/ and runs/demo when
    ``after_demo`` (what the pages assume ``bash scripts/demo.sh`` left behind)."""
    for name in ("configs", "eval_suites"):
        (root / name).symlink_to(ROOT / name)
    if after_demo:
        _run_bash(
            [
                tiny_command("mclip data demo --out demo_data"),
                tiny_command("mclip train --config configs/demo.yaml train.out_dir=runs/demo"),
            ],
            root,
        )
    return root


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory) -> Path:
    return _workspace(tmp_path_factory.mktemp("docs"), after_demo=True)


def _run_bash(lines: list[str], cwd: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TOKENIZERS_PARALLELISM": "false",
    }
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=1200, env=env
    )
    assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_some_blocks_are_marked_runnable():
    assert "README.md" in _pages_with_runnable_blocks() and len(_pages_with_runnable_blocks()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_runnable_blocks())
def test_runnable_blocks_run(page, after_demo, tmp_path):
    blocks = runnable_blocks((ROOT / page).read_text("utf-8"))
    assert blocks
    where = _workspace(tmp_path, after_demo=False) if page == "README.md" else after_demo
    _run_bash([tiny_command(c) for block in blocks for c in commands(block)], where)
