import io

import pytest

from ablab.execute import progress
from ablab.execute.progress import ProgressView


def test_plain_log_lines_when_not_a_terminal():
    out = io.StringIO()
    view = ProgressView(total=3, already_done=1, stream=out, tty=False)
    view.started("r1", "adam", 0)
    view.epoch("r1", 2, 4)
    view.finished("r1", "adam", 0, "done", 1.25, "test.accuracy=0.9")
    view.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "2 of 3 runs to do (1 already stored)"
    assert lines[1] == "[2/3] done     adam #0 (r1) in 1.2s  test.accuracy=0.9"
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[-1].startswith("1 runs finished in ")


class _Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_terminal_line_shows_runs_epochs_and_eta(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress, "time", clock)
    out = io.StringIO()
    view = ProgressView(total=4, stream=out, tty=True)
    assert view.eta_seconds() is None
    view.started("a", "sgd", 1)
    view.epoch("a", 0, 10)  # the run's first report: its total, before its first epoch
    assert view.line() == "0/4 runs | ETA ? | elapsed 0:00 | sgd #1 epoch 0/10"
    view.epoch("a", 3, 10)
    assert view.line() == "0/4 runs | ETA 0:00 | elapsed 0:00 | sgd #1 epoch 3/10"
    clock.now += 10  # 10 s later: 0.3 of 4 runs took 10 s
    assert view.eta_seconds() == pytest.approx(10 * (4 - 0.3) / 0.3)
    assert view.line() == "0/4 runs | ETA 2:03 | elapsed 0:10 | sgd #1 epoch 3/10"
    view.finished("a", "sgd", 1, "diverged", 2.0)
    assert "diverged sgd #1" in out.getvalue()  # non-done results are logged above the bar
    assert "\r\x1b[2K" in out.getvalue()


def test_close_ends_the_terminal_output_on_a_new_line():
    """What follows the summary (the CLI's ``study: 6 done``) starts a line of its own (issue 12)."""
    out = io.StringIO()
    view = ProgressView(total=1, stream=out, tty=True)
    view.started("a", "sgd", 0)
    view.finished("a", "sgd", 0, "done", 1.0)
    view.close()
    text = out.getvalue()
    assert text.endswith("1/1 stored\n")
    last = text.rsplit("\r\x1b[2K", 1)[1]  # what the terminal shows after the last line clear
    assert last.startswith("1 runs finished in ") and last.count("\n") == 1
    view.epoch("a", 1, 1)  # a late event draws nothing after the summary
    assert out.getvalue() == text


def test_a_narrow_terminal_cuts_the_running_runs_not_the_eta(monkeypatch):
    """At 100 columns with long labels the ETA and the elapsed time stay on the line (issue 21)."""
    clock = _Clock()
    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setattr(progress.shutil, "get_terminal_size", lambda fallback: __import__("os").terminal_size((100, 20)))
    out = io.StringIO()
    view = ProgressView(total=12, stream=out, tty=True)
    for i in range(2):
        view.started(f"r{i}", f"model.norm=batchnorm, optimizer=sgd(lr=0.05, momentum=0.9), run {i}", i, epochs=30)
        view.epoch(f"r{i}", 0, 30)
        view.epoch(f"r{i}", 6, 30)
    clock.now += 60
    view._draw(force=True)
    shown = out.getvalue().rsplit("\r\x1b[2K", 1)[1]
    assert len(shown) == 99 and shown.startswith("0/12 runs | ETA 29:00 | elapsed 1:00 | model.norm=batchnorm")


def test_the_epoch_total_is_known_from_the_start():
    """A run shows its planned epochs from its start (the spec's epochs), not 'epoch 0/?' (issue 21)."""
    view = ProgressView(total=1, stream=io.StringIO(), tty=True)
    view.started("a", "sgd", 0, epochs=30)
    assert view.line().endswith("sgd #0 epoch 0/30")


def test_a_continued_run_counts_its_own_epochs_for_the_eta(monkeypatch):
    """A run continued from epoch 3 of 10 that has trained to epoch 3 has done none of its work yet."""
    clock = _Clock()
    monkeypatch.setattr(progress, "time", clock)
    view = ProgressView(total=1, stream=io.StringIO(), tty=True)
    view.started("a", "sgd", 0, epochs=10)
    view.epoch("a", 3, 10)
    clock.now += 5
    assert view.eta_seconds() is None
    view.epoch("a", 5, 10)  # 2 of its 7 epochs
    assert view.eta_seconds() == pytest.approx(5 * (1 - 2 / 7) / (2 / 7))


def test_the_loop_reports_the_total_before_the_first_epoch():
    from ablab.spec import RunSpec
    from ablab.train.loop import train
    from conftest import TINY_BASE

    seen = []
    spec = RunSpec.model_validate({**TINY_BASE, "epochs": None, "steps": 25})  # 10 steps an epoch: 3 epochs
    train(spec, progress=lambda e, n: seen.append((e, n)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
