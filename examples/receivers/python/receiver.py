#!/usr/bin/env python3
"""Example hookbatch subscriber in Python, standard library only.

It verifies each delivered batch by the Standard Webhooks v1 scheme (HMAC-SHA256
over "<webhook-id>.<webhook-timestamp>.<body>", base64, constant-time compare,
5 minute timestamp tolerance), de-duplicates by batch id and hands each new
batch to a processing function once.

hookbatch delivers at least once: a batch whose 2xx answer was lost is sent
again with the same batch_id, so a repeat is answered 200 without being
processed again. Processed ids are remembered in memory for a window; a real
receiver records them in the same transaction as the batch's effects.

Answers, and what hookbatch does with them:

    200  processed now, or a duplicate of a processed batch: delivered
    401  signature missing, wrong or outside the tolerance: permanent failure
    400  verified but not a well-formed batch: permanent failure
    411  no Content-Length: permanent failure (hookbatch always sends one)
    413  body over the limit: hookbatch splits the batch in half
    500  processing failed: hookbatch retries with backoff
    503  a concurrent delivery of the same batch took too long: retried

The official `standardwebhooks` package from PyPI does the same check
(`Webhook(secret).verify(body, headers)`); this file avoids it so that it runs
where PyPI is out of reach. Note that hookbatch uses a secret without the
"whsec_" prefix as raw bytes (here: decode_secret), which the official library
does not do for a string secret.

Run it:

    WEBHOOK_SECRET=whsec_... python3 receiver.py --listen 127.0.0.1:9090
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping, Optional

SECRET_ENV = "WEBHOOK_SECRET"
SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60

log = logging.getLogger("receiver")

_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")


class VerificationError(Exception):
    """The delivery's Standard Webhooks signature does not verify."""


def decode_secret(secret: str) -> bytes:
    """Return the HMAC key of a hookbatch secret.

    The base64-decoded part of a "whsec_" secret, or the secret's own (UTF-8)
    bytes when it has no such prefix. Errors never hold the secret.
    """
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the whsec_ secret is not valid standard base64") from None
    else:
        key = secret.encode("utf-8")
    if not key:
        raise ValueError("the secret is empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the v1 signature of a message: "v1,<base64 HMAC-SHA256>"."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode("utf-8") + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def verify(
    keys: list[bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: Optional[float] = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Check the Standard Webhooks headers of a delivery against body.

    headers is looked up by lower-case name (http.server's headers are
    case-insensitive; pass a dict with lower-case keys otherwise). Passes when
    any v1 entry of webhook-signature equals the signature with any of keys.
    Raises VerificationError saying which check failed.
    """
    msg_id = headers.get("webhook-id") or ""
    ts_text = headers.get("webhook-timestamp") or ""
    sig_header = headers.get("webhook-signature") or ""
    if not msg_id or not ts_text or not sig_header:
        raise VerificationError("missing required headers")
    if not _TIMESTAMP_RE.fullmatch(ts_text):
        raise VerificationError("invalid webhook-timestamp")
    ts = int(ts_text)
    now = time.time() if now is None else now
    if now - ts > tolerance:
        raise VerificationError("message timestamp too old")
    if ts - now > tolerance:
        raise VerificationError("message timestamp too new")

    expected = [sign(k, msg_id, ts, body).encode("ascii") for k in keys]
    matched = False
    for entry in sig_header.split(" "):
        version, _, _ = entry.partition(",")
        if version != "v1":
            continue
        got = entry.encode("utf-8", "replace")
        for want in expected:
            # Compare with every key, without stopping early.
            matched |= hmac.compare_digest(got, want)
    if not matched:
        raise VerificationError("no matching signature found")


class Dedup:
    """Processed batch ids, remembered for a window and at most max_ids of them.

    Concurrent deliveries of one batch wait for each other, so a batch is
    processed once even when hookbatch retries it (after a timeout) while
    the first delivery is still being processed.
    """

    def __init__(self, window: float = 24 * 3600, max_ids: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._in_progress: set[str] = set()
        self._done: "collections.OrderedDict[str, float]" = collections.OrderedDict()
        self._window = window
        self._max = max_ids
        self._clock = clock

    def begin(self, batch_id: str, wait: float = 30.0) -> Optional[bool]:
        """True: the caller is to process the batch and then call end().
        False: the batch was processed already. None: a concurrent delivery
        of it is still being processed after waiting `wait` seconds."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                self._expire()
                if batch_id in self._done:
                    return False
                if batch_id not in self._in_progress:
                    self._in_progress.add(batch_id)
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def end(self, batch_id: str, processed: bool) -> None:
        with self._cond:
            self._in_progress.discard(batch_id)
            if processed:
                self._done[batch_id] = self._clock()
                self._expire()
            self._cond.notify_all()

    def _expire(self) -> None:
        now = self._clock()
        while self._done:
            batch_id, at = next(iter(self._done.items()))
            if len(self._done) <= self._max and now - at < self._window:
                return
            del self._done[batch_id]


class Receiver:
    """Verifies, de-duplicates and processes deliveries; HTTP-agnostic."""

    def __init__(self, secret: str, process: Callable[[dict], None],
                 max_body_bytes: int = 8 << 20, dedup: Optional[Dedup] = None,
                 tolerance: int = TOLERANCE_SECONDS) -> None:
        self.keys = [decode_secret(secret)]
        self.process = process
        self.max_body_bytes = max_body_bytes
        self.dedup = dedup or Dedup()
        self.tolerance = tolerance

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict]:
        """Answer one POSTed delivery: (status, JSON answer)."""
        try:
            verify(self.keys, headers, body, tolerance=self.tolerance)
        except VerificationError as e:
            return 401, {"error": f"signature: {e}"}

        try:
            batch = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return 400, {"error": f"body: {e}"}
        if not isinstance(batch, dict) or batch.get("batch") is not True \
                or not isinstance(batch.get("batch_id"), str) or not batch["batch_id"]:
            return 400, {"error": 'body: not a batch ("batch": true and "batch_id" required)'}
        events = batch.get("events")
        count = batch.get("count")
        if not isinstance(events, list) or type(count) is not int or count != len(events):
            return 400, {"error": 'body: "count" does not match "events"'}
        batch_id = batch["batch_id"]
        # webhook-id and the body are signed; X-Webhook-Batch-Id is not, but
        # hookbatch sets all three to the batch id.
        if headers.get("webhook-id") != batch_id:
            return 400, {"error": 'webhook-id differs from "batch_id"'}
        header_id = headers.get("x-webhook-batch-id")
        if header_id and header_id != batch_id:
            return 400, {"error": 'X-Webhook-Batch-Id differs from "batch_id"'}
        try:
            batch["attempt"] = int(headers.get("x-webhook-attempt") or 0)
        except ValueError:
            batch["attempt"] = 0

        first = self.dedup.begin(batch_id)
        if first is None:
            return 503, {"error": "a concurrent delivery of this batch is still being processed"}
        if not first:
            log.info("duplicate batch %s attempt %s", batch_id, batch["attempt"])
            return 200, {"received": len(events), "duplicate": True}
        try:
            self.process(batch)
        except Exception as e:  # noqa: BLE001 - any failure means: retry later
            self.dedup.end(batch_id, False)
            log.warning("processing batch %s failed: %s", batch_id, e)
            return 500, {"error": f"processing failed: {e}"}
        self.dedup.end(batch_id, True)
        log.info("batch %s: %d events, attempt %s", batch_id, len(events), batch["attempt"])
        return 200, {"received": len(events), "duplicate": False}


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as hookbatch's client expects
        timeout = 60                   # per socket read

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                return self._answer(411, {"error": "Content-Length required"})
            n = int(length)
            if n > receiver.max_body_bytes:
                self.close_connection = True  # the body is left unread
                return self._answer(413, {"error": f"body larger than {receiver.max_body_bytes} bytes"})
            body = self.rfile.read(n)
            if len(body) != n:
                self.close_connection = True
                return self._answer(400, {"error": "body shorter than Content-Length"})
            status, answer = receiver.handle(self.headers, body)
            if status >= 400:
                log.warning("refused delivery of %r: %d %s", self.headers.get("X-Webhook-Batch-Id"),
                            status, answer.get("error"))
            self._answer(status, answer)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                return self._answer(200, {"ok": True})
            self._method_not_allowed()

        do_PUT = do_DELETE = do_PATCH = lambda self: self._method_not_allowed()  # noqa: E731

        def _method_not_allowed(self) -> None:
            self.close_connection = True
            self._answer(405, {"error": "method not allowed"}, {"Allow": "POST"})

        def _answer(self, status: int, answer: dict, extra: Optional[dict] = None) -> None:
            data = (json.dumps(answer, separators=(",", ":")) + "\n").encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(address: tuple[str, int], receiver: Receiver) -> ThreadingHTTPServer:
    """An HTTP server for receiver on address (host, port); port 0 picks one."""
    cls = _Server6 if ":" in address[0] else _Server
    return cls(address, make_handler(receiver))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:9090", help="host:port to listen on")
    p.add_argument("--dedup-window", type=float, default=24 * 3600,
                   help="seconds processed batch ids are remembered")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def process(batch: dict) -> None:
        for e in batch["events"]:
            log.info("event %s %s of batch %s", e.get("id"), e.get("type"), batch["batch_id"])

    try:
        receiver = Receiver(os.environ.get(SECRET_ENV, ""), process,
                            dedup=Dedup(window=args.dedup_window))
    except ValueError as e:
        print(f"receiver: {e} (set {SECRET_ENV} to the subscriber's secret)", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    server = make_server((host.strip("[]") or "0.0.0.0", int(port)), receiver)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log.info("listening on %s", args.listen)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
