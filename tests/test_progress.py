"""Progress on a terminal: ``parrbm train`` and ``parrbm run`` each show one bar, and the
lines they print between its updates never break it (run under a pseudo-terminal); a
machine's calibration is kept and reused."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_a_terminal(argv: list[str], cwd, timeout: float = 240.0) -> tuple[int, str]:
    """``python -m parrbm argv`` with stdin, stdout and stderr on a pseudo-terminal; its
    exit status and everything the terminal received."""
    master, slave = pty.openpty()
    # a terminal of 120 x 40, as a user's (a new pty is 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parrbm", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"parrbm {' '.join(argv)} did not end within {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def visible_lines(raw: str) -> list[str]:
    """What each terminal line shows in the end: the text after its last carriage return."""
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    return [line.split("\r")[-1] for line in text.split("\n")]


def bar_pieces(raw: str, desc: str) -> list[str]:
    """Every state of the bar called ``desc`` that was drawn."""
    return re.findall(rf"{desc}:\s+\d+%\|", ANSI.sub("", raw))


def test_train_shows_one_bar_and_its_epoch_lines_do_not_break_it(tmp_path):
    status, raw = run_on_a_terminal(["train", "--data", "digits", "--epochs", "4", "--hidden", "16"], tmp_path)
    assert status == 0, raw
    assert bar_pieces(raw, "RBM"), raw  # the bar was drawn
    lines = visible_lines(raw)
    for k in range(1, 5):
        shown = [line for line in lines if f"[RBM] Iteration {k}," in line]
        assert len(shown) == 1 and shown[0].startswith(f"[RBM] Iteration {k},"), (k, shown)
    # no line holds a bar and a message, and no other bar was drawn
    assert not [line for line in lines if "%|" in line and "Iteration" in line]
    assert set(re.findall(r"(\w+):\s+\d+%\|", ANSI.sub("", raw))) == {"RBM"}


def test_run_shows_one_bar_over_the_grid_and_its_lines_do_not_break_it(tmp_path):
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\nmodel: {visible: 32, hidden: 64}\ndata: {kind: random-binary, cases: 100}\n"
        "training: {batch_size: 10, steps: 2, warmup: 0, repeats: 2}\n"
        "grid: {strategy: [serial, green-only], workers: [1, 2], transport: [threads]}\n"
    )
    status, raw = run_on_a_terminal(["run", "tiny.yaml", "--out", "res", "--no-calibrate"], tmp_path)
    assert status == 0, raw
    pieces = bar_pieces(raw, "grid")
    assert pieces and re.search(r"grid:\s+100%\|", ANSI.sub("", raw)), raw  # it reached the end
    assert re.search(r"\d+/\d+ runs \[\d\d:\d\d<\d\d:\d\d\]", ANSI.sub("", raw))  # elapsed < remaining
    lines = visible_lines(raw)
    runs = [line for line in lines if re.search(r"\[\d/\d\] ", line)]
    assert len(runs) == 4 * 2 and all(re.match(r"\[\d/\d\] ", line) for line in runs), runs
    assert not [line for line in lines if "%|" in line and re.search(r"\[\d/\d\] ", line)]
    assert set(re.findall(r"(\w+):\s+\d+%\|", ANSI.sub("", raw))) == {"grid"}
    assert any(line.startswith("results: ") for line in lines)


def test_a_machines_calibration_is_kept_and_reused(tmp_path, monkeypatch):
    from parrbm.analysis import calibrate as cal
    from parrbm.analysis.timemodel import Profile
    from parrbm.harness.comparison_config import load_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = []

    def fake(**kw):
        made.append(kw)
        return Profile(cores=2, gemm={"float32": [[1, 1e9]], "float64": [[1, 1e9]]}, element={}, links={})

    monkeypatch.setattr(cal, "calibrate", fake)
    (tmp_path / "c.yaml").write_text(
        "name: c\nmodel: {visible: 8, hidden: 8}\ndata: {kind: random-binary, cases: 20}\n"
        "training: {batch_size: 5, steps: 1}\ngrid: {strategy: [serial], workers: [1], transport: [threads]}\n"
    )
    cfg = load_config(tmp_path / "c.yaml")
    said = []
    cal.calibrate_for_config(cfg, tmp_path / "a.profile.json", resume=False, progress=said.append)
    assert len(made) == 1 and "calibrating this machine for the time model, once" in said[0]
    assert list((tmp_path / "cache" / "parrbm").glob("calibration-*.json"))
    said.clear()
    cal.calibrate_for_config(cfg, tmp_path / "b.profile.json", resume=False, progress=said.append)
    assert len(made) == 1 and "calibration: this machine's, measured" in said[0]
    assert Profile.load(tmp_path / "b.profile.json").cores == 2
    said.clear()
    cal.calibrate_for_config(cfg, tmp_path / "c.profile.json", resume=False, progress=said.append, fresh=True)
    assert len(made) == 2 and "the last calibration of this kind here took" in said[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["train"],
        ["cost"],
        ["advise"],
        ["predict"],
        ["calibrate"],
        ["report"],
        ["plot"],
        ["table"],
        ["configs"],
        ["plot-filters"],
        ["info"],
        ["network", "cluster"],
    ],
)
def test_every_subcommand_has_an_example_in_its_help(argv, capsys):
    from parrbm.cli import main

    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert "example" in capsys.readouterr().out.lower()
