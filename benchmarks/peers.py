"""Measure the peer FER packages (``fer``, ``facex``) in the same fer-bench run as our models.

The peers run in their own interpreter (``--peer-python``; by default this one) through
``peer_worker.py``; their predictions are scored by the same functions as ours, so a table row
for ``fer`` and one for fer-edge differ only in what made the predictions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from fer_edge.edge.errors import FerEdgeError

from .endtoend import LabelledFace, score_end_to_end
from .measure import Timing

log = logging.getLogger("fer_edge.bench")
WORKER = Path(__file__).with_name("peer_worker.py")
PROGRESS = re.compile(r"@progress (\d+)")


def check_peer(peer: str, python: str | None) -> str:
    """The interpreter that has ``peer`` installed, or a one-line error saying how to get it."""
    exe = python or sys.executable
    try:
        probe = f"import importlib.metadata as m; print(m.version({peer!r}))"
        r = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise FerEdgeError(f"--peer-python {exe}: cannot run it ({e.strerror or e})") from None
    except subprocess.TimeoutExpired:
        raise FerEdgeError(f"--peer-python {exe}: did not answer within 60 s") from None
    if r.returncode != 0:
        raise FerEdgeError(f"--peers {peer}: not installed for {exe} (pip install {peer} in a "
                           "separate environment and pass its python as --peer-python)")
    return exe


def run_peer(peer: str, python: str, task: str, paths: list[str], threads: int = 1,
             loops: int = 1, progress=None, extra: dict | None = None) -> dict:
    """Run ``peer_worker.py`` on ``paths``; returns its JSON (see the worker's docstring).
    ``extra``: more job keys for the task (``timing`` for ``latency``)."""
    job = json.dumps({"peer": peer, "task": task, "paths": paths, "threads": threads,
                      "loops": loops, **(extra or {})})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    tail: list[str] = []

    def read_stderr() -> None:
        done = 0
        for line in proc.stderr:  # the peer's own logging may share a line with ours
            m = PROGRESS.search(line)
            if m:
                n = int(m.group(1))
                if progress is not None:
                    progress.update(n - done)
                done = n
                line = PROGRESS.sub("", line)
            if line.strip():
                tail[:] = [*tail[-19:], line.rstrip()]
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        with contextlib.suppress(BrokenPipeError):  # a worker that died at start: see below
            proc.stdin.write(job)  # stderr is the reader thread's: communicate() would race it
            proc.stdin.close()
        out = proc.stdout.read()
        proc.wait()
    except BaseException:
        proc.kill()
        raise
    reader.join(timeout=5)
    if proc.returncode != 0:
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        raise FerEdgeError(f"peer {peer} failed on {task} (exit {proc.returncode}): {last}")
    return json.loads(out)


def score_peer(peer: str, python: str, task: str, faces: list[LabelledFace],
               labels: tuple[str, ...], threads: int = 1, progress=None) -> dict:
    """``task`` "images": the peer's own detect -> classify on labelled photos; "crops":
    classifier only, each image given to the peer as one face box. Scored like ours."""
    paths = list(dict.fromkeys(f.path for f in faces))
    out = run_peer(peer, python, task, paths, threads, progress=progress)
    return {"peer": peer, "version": out["version"], **_score(peer, out, faces, labels)}


def _score(peer: str, out: dict, faces: list[LabelledFace], labels: tuple[str, ...]) -> dict:
    """The worker's ``predictions`` scored by the same function as ours."""
    preds = []
    for path, dets, secs in out["predictions"]:
        if not isinstance(dets, str):
            dets = [(tuple(box), lab) for box, lab in dets]
            odd = {lab for _, lab in dets} - set(labels)
            if odd:
                raise FerEdgeError(f"peer {peer} answered labels {sorted(odd)} that are not "
                                   f"the model's ({', '.join(labels)})")
        preds.append((path, dets, secs))
    return score_end_to_end(faces, labels, preds)


# Peers whose model file fer-bench can run on its own (peer_worker.py's ``model`` task).
MODEL_PEERS = ("fer",)


def peer_model(peer: str, python: str, faces: list[LabelledFace], labels: tuple[str, ...],
               threads: int, timing: Timing, progress=None) -> dict:
    """The peer's own model file in its own runtime (fer: TFLite in ai-edge-litert) with its
    own preprocessing and no detector or crop padding: ``faces`` (face crops) classified and
    scored like ours, and the batch-1 latency on the first of them (``latency_ms``, samples).
    Or ``skipped`` saying why it cannot run."""
    paths = list(dict.fromkeys(f.path for f in faces))
    out = run_peer(peer, python, "model", paths, threads, progress=progress,
                   extra={"timing": asdict(timing)})
    if "skipped" in out or not faces:
        return out
    return {**out, "score": _score(peer, out, faces, labels)}
