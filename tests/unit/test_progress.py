"""Progress bars: on a terminal, for work longer than a couple of seconds, silent otherwise."""

from __future__ import annotations

import io
import threading

from cimc.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal():
    out = io.StringIO()
    with progress(3, "run", delay=0.0, file=out) as bar:
        bar.set_postfix_str("running")
        bar.update()
    assert out.getvalue() == ""


def test_silent_for_work_shorter_than_the_delay():
    out = Terminal()
    with progress(3, "run", delay=60.0, file=out) as bar:
        for step in range(3):
            bar.set_postfix_str(f"step {step}")  # tqdm's own would draw at once
            bar.update()
    assert out.getvalue() == ""


def test_a_long_step_is_drawn_and_erased_without_any_update():
    """A run that reports nothing still shows its bar (a thread redraws it) and leaves no line."""
    out = Terminal()
    drawn = threading.Event()
    with progress(3, "run", delay=0.0, file=out) as bar:
        bar.set_postfix_str("programming the chip")
        for _ in range(200):  # the step: wait until the bar shows, without touching it
            if "programming the chip" in out.getvalue():
                drawn.set()
                break
            drawn.wait(0.1)
    assert drawn.is_set()
    assert "run:   0%" in out.getvalue() and "0/3" in out.getvalue()
    assert out.getvalue().endswith("\r")  # erased at the end (leave=False)


def test_postfix_shows_the_callbacks_steps():
    from cimc.progress import postfix

    out = Terminal()
    drawn = threading.Event()
    with progress(3, "run", delay=0.0, file=out) as bar:
        postfix(bar, "running 1 samples")("crossbars at t = 0 s", 7, 20)
        for _ in range(200):
            if "running 1 samples: crossbars at t = 0 s 7/20" in out.getvalue():
                drawn.set()
                break
            drawn.wait(0.1)
    assert drawn.is_set()
