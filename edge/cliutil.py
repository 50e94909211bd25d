"""What every CLI shares: logging set-up and one place that turns errors into exit codes."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import click

from .errors import FerEdgeError, RedactingFilter, redact


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # no secret in any log line (redact.py)
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def friendly_errors(fn: Callable) -> Callable:
    """Run a command body; a FerEdgeError becomes 'error: ...' on stderr and exit 1,
    Ctrl-C exit 130, so no bad input ends in a traceback or a silent exit 0."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FerEdgeError as e:
            click.echo(f"error: {redact(str(e))}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def echo(message: str) -> None:
    """A status line on stderr, with any secret in it (a URL's password) hidden."""
    click.echo(redact(message), err=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt, so ``kill`` cleans up exactly like
    Ctrl-C (temporary files removed, partial results written, exit 130); the previous
    handler comes back afterwards. A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Option types every CLI shares: numbers that are numbers. ``click.FloatRange`` accepts ``nan``
# (every comparison with NaN is false, so no bound ever fails) and ``inf``: a NaN learning rate
# trains a NaN model, a NaN gate can never fail, an infinite time budget never ends. Every float
# option of every command is a :class:`Finite`; :data:`SEED` is the seed range numpy and torch
# accept.

class Finite(click.FloatRange):
    """A float within ``[min, max]`` (bounds optional, open with ``min_open``/``max_open``)
    that is never NaN or infinite."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


SEED = click.IntRange(0, 2**32 - 1)  # numpy's and torch's seed range
