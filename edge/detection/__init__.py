"""Detection room: the faces in a frame.

``common`` (``Detection``, the ``Detector`` call, the downscale, the re-detect near a tracked
box), one module per detector family: ``opencv`` (Haar cascades, YuNet) and ``ours`` (the
detector bundle fer-export writes); ``choose`` (which detector a source gets), ``metrics``
(AP, recall at a false-detection rate) and ``framing`` (the crop margin that frames a
detector's boxes like the training images).

May import: the shared top modules and the input room. Never inference or outputs.
"""
