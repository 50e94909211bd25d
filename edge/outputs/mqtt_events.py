"""Face-track events to an MQTT broker: ``fer-edge run --mqtt mqtt://[user:pass@]host:port/topic``.

One compact JSON message per track event (``events.TrackEvents``: appear, label change,
disappear) and a heartbeat with FPS every ``heartbeat`` seconds, all on
``<topic>/<device id>``, QoS 1, numbered by ``seq`` so a reader sees a gap. The message
schema is in docs/schema.md.

paho-mqtt's network thread (``loop_start``) does all the talking: ``write`` only queues, so
the loop never waits for the broker. While the broker is away, messages wait in paho's queue
(at most ``max_queued`` of them; more are dropped and counted) and paho reconnects with
exponential backoff (1 s .. 30 s); queued messages go out after the reconnect. A last will
on the same topic says ``offline`` if the device vanishes without closing.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import FerEdgeError, redact, register
from ..results import FrameResult
from .events import SCHEMA, TrackEvent, TrackEvents
from .sinks import LoopRates

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000  # messages kept while the broker is away (~2 MB)
FLUSH_S = 5.0  # at close: how long to wait for queued messages to reach the broker


@dataclass
class MqttTarget:
    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user:pass@]host[:port]/topic`` (port 1883 by default)."""
    u = urlsplit(url)
    topic = unquote(u.path.lstrip("/")).rstrip("/")
    try:
        port = 1883 if u.port is None else u.port
    except ValueError:
        port = -1
    if u.scheme != "mqtt" or not u.hostname or not topic or port < 1 or "#" in url or \
            "+" in topic:
        raise FerEdgeError(f"--mqtt {redact(url)!r}: expected mqtt://[user:pass@]host[:port]/topic "
                           "(a topic without wildcards), e.g. mqtt://broker.local:1883/fer-edge")
    password = unquote(u.password) if u.password else None
    register(password)  # never in a log line, paho's included
    return MqttTarget(u.hostname, port, topic, unquote(u.username) if u.username else None,
                      password)


# CONNACK codes that mean "who you are" rather than "where": MQTT 3.1.1 (4, 5), MQTT 5 (0x86,
# 0x87, 0x8C)
AUTH_REFUSALS = {4, 5, 0x86, 0x87, 0x8C}


def refusal(reason_code) -> str:
    """The broker's refusal in words; a wrong user or password says so (it is not a broker
    that cannot be reached)."""
    if getattr(reason_code, "value", None) in AUTH_REFUSALS:
        return (f"broker refused the connection: not authorised ({reason_code}); check the "
                "user and password in --mqtt mqtt://USER:PASS@host/topic")
    return f"broker refused the connection ({reason_code})"


def default_device_id() -> str:
    return socket.gethostname() or "fer-edge"


class MqttEvents:
    """A :class:`~fer_edge.edge.outputs.sinks.FrameSink` publishing track events (module
    docstring)."""

    def __init__(self, url: str, device_id: str | None = None, heartbeat: float = 10.0,
                 max_queued: int = MAX_QUEUED):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise FerEdgeError("--mqtt needs paho-mqtt: pip install 'fer-edge[mqtt]'") from None
        self.target = parse_mqtt_url(url)
        self.device = device_id or default_device_id()
        if any(c in self.device for c in "/#+"):
            raise FerEdgeError(f"--device-id {self.device!r}: no '/', '#' or '+' (it is part "
                               "of the MQTT topic)")
        self.topic = f"{self.target.topic}/{self.device}"
        self.heartbeat, self.max_queued, self.seq, self.dropped = heartbeat, max_queued, 0, 0
        # mids the broker has not acknowledged yet (on_publish may beat publish's return)
        self._pending: set[int] = set()
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self.events: dict[int, TrackEvents] = {}  # per stream (several --source)
        self.rates = LoopRates()
        self._refused: str | None = None  # why the broker refused us, if it did
        self._next_beat = time.monotonic()  # the first frame sends a heartbeat
        self._connected = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"fer-edge-{self.device}-{id(self) & 0xFFFF:04x}")
        self.client.enable_logger(logging.getLogger("fer_edge.edge.mqtt.paho"))
        if self.target.username:
            self.client.username_pw_set(self.target.username, self.target.password)
        self.client.max_queued_messages_set(max_queued)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.will_set(self.topic, self._encode({"type": "offline"}, count=False), qos=1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        # connect_async: an absent broker is not an error at start; paho keeps trying
        self.client.connect_async(self.target.host, self.target.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._connected = not reason_code.is_failure
        if reason_code.is_failure:
            why = refusal(reason_code)
            if why != self._refused:  # paho retries with backoff: say it once per reason
                log.warning("--mqtt %s:%d: %s", self.target.host, self.target.port, why)
            self._refused = why
        else:
            self._refused = None
            log.info("--mqtt: connected to %s:%d, publishing on %s", self.target.host,
                     self.target.port, self.topic)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if self._connected:
            log.warning("--mqtt: lost the broker (%s); queueing, reconnecting with backoff",
                        reason_code)
        self._connected = False

    def _encode(self, body: dict, count: bool = True) -> bytes:
        msg = {"schema": SCHEMA, "device": self.device}
        if count:
            self.seq += 1
            msg["seq"] = self.seq
        msg.update(body)
        msg.setdefault("time", round(time.time(), 3))
        return json.dumps(msg, separators=(",", ":")).encode()

    def _publish(self, body: dict) -> None:
        info = self.client.publish(self.topic, self._encode(body), qos=1)
        if info.rc == 15:  # MQTT_ERR_QUEUE_SIZE: the offline queue is full
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("--mqtt: offline queue full (%d messages); %d dropped so far",
                            self.max_queued, self.dropped)
            return
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
            else:
                self._pending.add(info.mid)

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._early.add(mid)

    def publish_events(self, events: list[TrackEvent], stream: int = 0) -> None:
        for e in events:
            self._publish({**e.to_dict(), "stream": stream})

    def wants_image(self) -> bool:
        return False

    def write(self, result: FrameResult, image: np.ndarray | None) -> None:
        self.rates.update(result)
        events = self.events.setdefault(result.stream, TrackEvents())
        self.publish_events(events.update(result.index, result.timestamp, result.faces),
                            result.stream)
        if self.heartbeat > 0 and time.monotonic() >= self._next_beat:
            self._next_beat = time.monotonic() + self.heartbeat
            self._beat(result.index)

    def _beat(self, frame: int | None) -> None:
        self._publish({"type": "heartbeat", **self.rates.to_dict(), "frame": frame,
                       "tracks": sum(len(e.live) for e in self.events.values()),
                       "dropped": self.dropped})

    def close(self, flush: float = FLUSH_S) -> None:
        """End every live track, send a last heartbeat, wait up to ``flush`` seconds for the
        queue to reach the broker, then disconnect (what is still queued is lost, and
        counted in the log)."""
        for stream, events in self.events.items():
            self.publish_events(events.finish(), stream)
        self._beat(None)
        deadline = time.monotonic() + flush
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.02)
        left = len(self._pending)
        if left:
            log.warning("--mqtt: %d message(s) not delivered: broker %s:%d %s", left,
                        self.target.host, self.target.port, self._refused or "unreachable")
        self.client.disconnect()
        self.client.loop_stop()
