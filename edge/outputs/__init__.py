"""Outputs room: where results go.

``sinks`` (window, annotated video, JSON Lines; the ``FrameSink`` protocol), ``live_view``
(the HTTP live page), ``mqtt_events`` (track events to a broker), ``events`` (a track's
start/change/end) and ``timeline`` (per-track timelines and the report).

May import: the shared top modules (``results``, ``labels``, ``errors``) and the input room.
Never inference, detection or the pipeline: outputs read ``FrameResult`` only.
"""
