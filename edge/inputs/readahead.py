"""Decode ahead: a frame source read on its own thread into a small bounded queue, so that
decoding the next frame overlaps detecting and classifying this one (OpenCV's decoder and
onnxruntime release the GIL).

Files keep every frame (the reader waits while the queue is full); live sources keep only the
newest frame (an older one still queued is dropped and counted, as the live capture itself
does). The reader's error (a dead stream, an undecodable file) is raised by :meth:`poll` in
the consumer's thread, after the frames before it. :meth:`close` stops the reader without
waiting for the source to end: the thread is a daemon and never holds the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from .sources import Frame, FrameSource

log = logging.getLogger(__name__)

DEPTH = 4  # frames decoded ahead of a file source
_END = object()


class ReadAhead:
    """``poll()`` -> the next frame or None (none ready yet); ``ended`` after the last one.
    ``ready`` (a shared :class:`threading.Event`) is set whenever a frame or the end arrives,
    so one consumer can wait on several readers."""

    def __init__(self, source: FrameSource, depth: int = DEPTH,
                 ready: threading.Event | None = None, name: str = "fer-edge-decode"):
        self.source = source
        self.newest_only = source.newest_only
        self.depth = 1 if self.newest_only else max(1, depth)
        self.ready = ready or threading.Event()
        self.ended = False
        self.dropped = 0  # live: frames replaced in the queue before the loop took them
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        it = iter(self.source)
        end: object = _END
        try:
            while not self._stop:
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                item = (frame, (time.perf_counter() - t0) * 1e3)
                with self._cond:
                    if self.newest_only and self._items:
                        self._items.clear()
                        self.dropped += 1
                    while len(self._items) >= self.depth and not self._stop:
                        self._cond.wait(0.1)
                    if self._stop:
                        return
                    self._items.append(item)
                self.ready.set()
        except Exception as e:  # handed to the consumer, raised there
            end = e
        with self._cond:
            self._items.append((end, 0.0))
        self.ready.set()

    def poll(self) -> tuple[Frame, float] | None:
        """The next (frame, decode ms), or None when none is ready or after the end; raises
        the reader's error once the frames before it were taken."""
        with self._cond:
            if self.ended or not self._items:
                return None
            item, ms = self._items.popleft()
            self._cond.notify_all()
        if item is _END:
            self.ended = True
            return None
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        return item, ms

    def get(self, timeout: float = 0.1) -> tuple[Frame, float] | None:
        """Like :meth:`poll`, waiting up to ``timeout`` seconds for a frame."""
        deadline = time.perf_counter() + timeout
        while True:
            self.ready.clear()
            got = self.poll()
            left = deadline - time.perf_counter()
            if got is not None or self.ended or left <= 0:
                return got
            self.ready.wait(left)

    def close(self) -> None:
        """Stop the reader, then close the source (a capture is released only once its
        reader has let go of it; a reader stuck in a blocking read is left to die with the
        process, it is a daemon)."""
        self._stop = True
        with self._cond:
            self._cond.notify_all()
        self.source.interrupt()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.debug("%s: the reader is still in a read; leaving it", self.source.spec.target)
            return
        self.source.close()
