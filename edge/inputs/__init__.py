"""Input room: where frames and files come from, and how files are written safely.

``sources`` (camera, video, image, folder, URL as one ``FrameSource``), ``readahead``
(decoding on its own thread), ``images`` (the checked image reader every stage uses) and
``files`` (atomic writes, writable-folder and disk-full checks).

May import: the shared top modules (``errors``). Never detection, inference, outputs or the
loop.
"""
