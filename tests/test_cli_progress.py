"""Off a terminal, long CLI commands print their progress as plain lines."""

import io
import subprocess
import sys

from mclip.cli_progress import LineProgress


def test_line_progress_prints_at_most_every_interval_and_at_the_end():
    now = [0.0]
    stream = io.StringIO()
    with LineProgress(
        "teacher embeddings", unit="img", every_s=60, clock=lambda: now[0], stream=stream
    ) as bar:
        bar.update(100)  # t = 0: too soon for a line
        now[0] = 61.0
        bar.update(100)  # a line: 200 images at 200 / 61 img/s
        now[0] = 90.0
        bar.update(50)  # 29 s after the last line: nothing
        bar.set_postfix(loss="0.5")
        now[0] = 100.0
    lines = stream.getvalue().splitlines()
    assert lines == [
        "[mclip] teacher embeddings: 200 img (3.3 img/s)",
        "[mclip] teacher embeddings: 250 img (2.5 img/s, loss=0.5, done in 100 s)",
    ]


def test_line_progress_shows_the_total_and_is_silent_after_an_error():
    stream = io.StringIO()
    try:
        with LineProgress("demo data", total=10, unit="img", every_s=0, stream=stream) as bar:
            bar.update(4)
            raise KeyError("boom")
    except KeyError:
        pass
    assert stream.getvalue().startswith("[mclip] demo data: 4/10 img (")
    assert stream.getvalue().count("\n") == 1


def test_progress_bar_off_a_terminal_is_a_line_progress():
    code = (
        "from mclip.cli_progress import progress_bar\n"
        "with progress_bar('x', total=3, unit='img') as bar:\n"
        "    print(type(bar).__name__)\n"
        "    bar.update(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LineProgress"
    assert done.stderr.startswith("[mclip] x: 3/3 img (") and "done in" in done.stderr
