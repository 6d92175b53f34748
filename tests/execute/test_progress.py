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
    view.epoch("a", 3, 10)
    assert view.line() == "0/4 runs | sgd #1 epoch 3/10 | elapsed 0:00 | ETA 0:00"
    clock.now += 10  # 10 s later: 0.3 of 4 runs took 10 s
    assert view.eta_seconds() == pytest.approx(10 * (4 - 0.3) / 0.3)
    assert view.line() == "0/4 runs | sgd #1 epoch 3/10 | elapsed 0:10 | ETA 2:03"
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
