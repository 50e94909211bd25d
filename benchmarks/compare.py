"""The regression gate: compare a run with an earlier results.json."""

from __future__ import annotations

import json
from pathlib import Path

from fer_edge.edge.errors import FerEdgeError


def _key(r: dict) -> tuple:
    return (r["model"], r["precision"], r["backend"], r["threads"])


def load_results(path: str | Path) -> dict:
    """An earlier results.json, checked as far as :func:`compare` reads it, so a bad file is
    refused before the benchmark runs rather than after it."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FerEdgeError(f"{p}: results file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FerEdgeError(f"{p}: not valid JSON ({e})") from None
    except OSError as e:
        raise FerEdgeError(f"{p}: cannot read it ({e.strerror or e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise FerEdgeError(f"{p}: not a fer-bench results.json (no 'results' list)")
    try:  # read it the way the comparison will: a malformed row fails now, not after the run
        compare(data, data)
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:
        raise FerEdgeError(f"{p}: malformed fer-bench results ({type(e).__name__}: {e})") \
            from None
    return data


def compare(new: dict, old: dict, max_acc_drop: float = 0.5,
            max_latency_rise: float = 0.10) -> tuple[list[str], list[str]]:
    """Returns (lines describing every change, regressions). Accuracy in points, latency as a
    fraction of the old p50."""
    before = {_key(r): r for r in old["results"]}
    lines, bad = [], []
    for r in new["results"]:
        o = before.get(_key(r))
        if o is None:
            continue
        name = "/".join(str(k) for k in _key(r))
        if r.get("accuracy") is not None and o.get("accuracy") is not None:
            d = 100 * (r["accuracy"] - o["accuracy"])
            lines.append(f"{name}: accuracy {100 * o['accuracy']:.2f} -> "
                         f"{100 * r['accuracy']:.2f} ({d:+.2f} pt)")
            if d < -max_acc_drop:
                bad.append(f"{name}: accuracy fell {-d:.2f} points (> {max_acc_drop})")
        lo = o.get("latency_ms", {}).get("batch1", {}).get("p50")
        ln = r.get("latency_ms", {}).get("batch1", {}).get("p50")
        if lo and ln:
            rise = ln / lo - 1
            lines.append(f"{name}: p50 {lo:.3f} -> {ln:.3f} ms ({100 * rise:+.1f}%)")
            if rise > max_latency_rise:
                bad.append(f"{name}: p50 latency rose {100 * rise:.1f}% "
                           f"(> {100 * max_latency_rise:.0f}%)")
    if not lines:
        lines.append("no model/precision/backend/threads in common with the earlier results")
    return lines, bad
