"""Issue 23 items 5-7: bundle labels checked at load, the live view's bound address decides
the all-interfaces warning, and no secret (serve token, a URL's password) reaches a log line
or an error. Real processes, a real HTTP server, real files."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request

import pytest
from badinput import check_cli
from procs import RunProc

from fer_edge.edge.bundle import default_bundle_path, load_bundle
from fer_edge.edge.errors import FerEdgeError, RedactingFilter, redact, register

RUN = ["--no-display", "-q"]


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    """A copy of the shipped bundle whose labels a test may rewrite."""
    def make(labels: list) -> str:
        d = tmp_path_factory.mktemp("bundle") / "b"
        shutil.copytree(default_bundle_path(), d)
        meta = json.loads((d / "bundle.json").read_text())
        meta["labels"] = labels
        (d / "bundle.json").write_text(json.dumps(meta))
        return str(d)
    return make


SIX = ["disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.mark.parametrize("first", ["x" * 33, "an\ngry", "angry\x1b[31m", "   ", "\u200b"])
def test_bad_labels_are_refused_at_load(bundle_copy, first):
    path = bundle_copy([first, *SIX])
    with pytest.raises(FerEdgeError, match="label .* printable text of 1 to 32"):
        load_bundle(path)


def test_bad_label_is_one_line_from_the_cli(bundle_copy, video):
    path = bundle_copy(["<b>" + "x" * 40, *SIX])
    check_cli("fer-edge", ["run", *RUN, "--source", video, "--model", path], 1,
              ["bundle.json", "label", "32 characters"])


def test_html_label_loads_as_a_name(bundle_copy):
    """Printable and short: a valid label; the page renders it as text (test_live_view)."""
    assert load_bundle(bundle_copy(["<img src=x onerror=alert(1)>", *SIX])).labels[0] \
        .startswith("<img")


@pytest.mark.parametrize("spelling", ["0:0", "[::]:0", "0.0.0.0:0"])
def test_every_spelling_of_all_interfaces_warns(spelling, video):
    """The warning follows the address bound, not the string (0:PORT is 0.0.0.0)."""
    run = RunProc("--source", str(video), "--serve", spelling, "--max-frames", "3", *RUN)
    assert run.wait(60) == 0, run.stderr
    assert "open to every network" in run.stderr and "--serve-token" in run.stderr, run.stderr


def test_localhost_does_not_warn(video):
    run = RunProc("--source", str(video), "--serve", "localhost:0", "--max-frames", "3", *RUN)
    assert run.wait(60) == 0, run.stderr
    assert "open to every network" not in run.stderr


def test_serve_token_never_in_the_request_log(video):
    token = "tok-9f8e7d6c5b"
    run = RunProc("--source", str(video), "--serve", "127.0.0.1:0", "--loop", "30", "-v",
                  "--no-display", env={"FER_EDGE_SERVE_TOKEN": token})
    try:
        url = run.url()
        for path in (f"health?token={token}", f"state.json?v=ab&token={token}", "nothing"):
            try:
                urllib.request.urlopen(url + path, timeout=5).read()
            except urllib.error.HTTPError:
                pass
        urllib.request.urlopen(urllib.request.Request(
            url + "health", headers={"Authorization": f"Bearer {token}"}), timeout=5).read()
    finally:
        run.stop()
    assert "GET /health?token=***" in run.stderr, run.stderr[-2000:]  # logged, redacted
    assert token not in run.stderr


def test_url_password_never_in_an_error(video):
    r = check_cli("fer-edge", ["run", *RUN, "--reconnect", "0", "--source",
                               "rtsp://bob:pa55word-x@127.0.0.1:9/s"], 1, ["rtsp://bob:***@"])
    assert "pa55word-x" not in r.stderr + r.stdout


@pytest.mark.parametrize("text, secret", [
    ("mqtt://alice:s3cr3t@broker:1883/t", "s3cr3t"),
    ("opening rtsp://u:p%40ss@10.0.0.2/live failed", "p%40ss"),
    ("GET /stream.mjpg?v=1&token=abcdef HTTP/1.1", "abcdef"),
    ("GET /?token=abcdef", "abcdef"),
    ("headers {'Authorization': 'Bearer abcdef'}", "abcdef"),
    ("https://h/x?api_key=K3Y&x=1", "K3Y"),
])
def test_redact(text, secret):
    out = redact(text)
    assert secret not in out and "***" in out, out


def test_registered_secret_is_hidden_in_every_log_record(caplog):
    register("very-secret-value")
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    record = logging.LogRecord("paho", logging.DEBUG, __file__, 1, "sending %s", ("user "
                               "very-secret-value",), None)
    assert handler.filter(record)
    assert record.getMessage() == "sending user ***"
