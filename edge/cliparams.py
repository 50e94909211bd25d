"""The option types every CLI shares: numbers that are numbers.

``click.FloatRange`` accepts ``nan`` (every comparison with NaN is false, so no bound ever
fails) and ``inf``: a NaN learning rate trains a NaN model, a NaN gate can never fail, an
infinite time budget never ends. :class:`Finite` refuses both, so every float option of every
command (fer-train, fer-train-detector, fer-export, fer-edge, fer-bench) is one finite number
within its bounds; :data:`SEED` is the one seed range numpy and torch accept.
"""

from __future__ import annotations

import math

import click


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
