"""Display: bars on a terminal only, lines that stay everywhere, nothing on a silent process."""

from __future__ import annotations

import io

import torch

from mlproject.progress import Display, Progress, metrics_text, number


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_shows_on_a_terminal_with_the_loss():
    terminal = Terminal()
    bar = Progress(4, 0, "epoch 1", enabled=True, file=terminal)
    bar.update({"loss": torch.tensor(0.25)})
    bar.bar.refresh()  # the bar redraws at most twice a second; draw it now
    bar.close()
    assert "epoch 1" in terminal.getvalue() and "loss=0.25" in terminal.getvalue()


def test_no_bar_in_a_log_file_or_when_disabled():
    log = io.StringIO()
    for enabled in (True, False):
        bar = Progress(4, 0, "epoch 1", enabled=enabled, file=log)
        bar.update({"loss": 0.5})
        bar.close()
    assert log.getvalue() == ""


def test_lines_go_to_stderr_and_a_silent_display_writes_nothing(capsys):
    Display(enabled=True, bars=False).line("epoch 1/2 · step 4")
    Display(enabled=False).line("not shown")
    assert capsys.readouterr().err == "epoch 1/2 · step 4\n"


def test_metrics_read_as_four_significant_digits():
    assert number(0.123456) == "0.1235" and number(3) == "3"
    assert metrics_text({"loss": 1 / 3, "accuracy": 0.5}) == "loss 0.3333 accuracy 0.5"
