"""Tests of receiver.py: python3 -m unittest (from this directory).

Deliveries here are signed by this file's own Standard Webhooks signer, which
is checked against the specification's test vector. When the environment
variable HOOKBATCH_SIGNED_FIXTURE names a JSON file of deliveries signed by
hookbatch's own signing package (the Go test
examples/receivers/go/python_test.go writes one), those are replayed against
the receiver too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import os
import threading
import time
import unittest

import receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# The test vector of the Standard Webhooks specification.
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

logging.getLogger("receiver").setLevel(logging.CRITICAL)


def batch_body(batch_id: str, n: int) -> bytes:
    events = ",".join(
        '{"id":"evt_%d","type":"order.created","timestamp":"2026-12-03T10:00:00Z",'
        '"data":{"n": %d, "s":"caf\u00e9 \\u00e9"}}' % (i, i)
        for i in range(n)
    )
    return ('{"batch":true,"batch_id":%s,"subscriber":"orders","count":%d,"events":[%s]}'
            % (json.dumps(batch_id), n, events)).encode("utf-8")


def hookbatch_headers(secret: str, batch_id: str, body: bytes, attempt: int = 1,
                      ts: int | None = None, previous: tuple[str, ...] = ()) -> dict[str, str]:
    """Headers of a delivery as hookbatch makes them (DESIGN section 6)."""
    ts = int(time.time()) if ts is None else ts
    keys = [receiver.decode_secret(s) for s in (secret, *previous)]
    std = " ".join(
        "v1," + base64.b64encode(hmac.new(k, f"{batch_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        for k in keys)
    return {
        "Content-Type": "application/json",
        "User-Agent": "hookbatch/test",
        "X-Webhook-Batch": "true",
        "X-Webhook-Batch-Id": batch_id,
        "X-Webhook-Batch-Count": str(json.loads(body).get("count", 0)),
        "X-Webhook-Attempt": str(attempt),
        "X-Webhook-Signature": "sha256=" + hmac.new(keys[0], body, hashlib.sha256).hexdigest(),
        "webhook-id": batch_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": std,
    }


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[dict] = []
        self.calls = 0
        self.fail = 0
        self.block: threading.Event | None = None

    def __call__(self, batch: dict) -> None:
        with self.lock:
            self.calls += 1
        if self.block is not None:
            self.block.wait(10)
        with self.lock:
            if self.fail > 0:
                self.fail -= 1
                raise RuntimeError("database unavailable")
            self.batches.append(batch)


class ServerCase(unittest.TestCase):
    """Runs a receiver over real HTTP on a free port."""

    def start(self, secret: str = SECRET, **kw) -> Recorder:
        rec = Recorder()
        self.receiver = receiver.Receiver(secret, rec, **kw)
        server = self.server = receiver.make_server(("127.0.0.1", 0), self.receiver)
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        t.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            t.join(5)
        self.addCleanup(stop)
        return rec

    def post(self, body: bytes, headers: dict[str, str], path: str = "/hooks") -> tuple[int, dict]:
        conn = http.client.HTTPConnection(*self.server.server_address[:2], timeout=10)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def deliver(self, batch_id: str, n: int = 2, secret: str = SECRET, **kw) -> tuple[int, dict]:
        body = batch_body(batch_id, n)
        return self.post(body, hookbatch_headers(secret, batch_id, body, **kw))


class TestVerify(unittest.TestCase):
    def test_specification_vector(self) -> None:
        key = receiver.decode_secret(SECRET)
        self.assertEqual(receiver.sign(key, VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG)
        headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIG}
        receiver.verify([key], headers, VECTOR_BODY, now=VECTOR_TS)
        # Several entries and other versions in the header.
        headers["webhook-signature"] = "v1a,abc v2,xyz v1,AAAA " + VECTOR_SIG
        receiver.verify([key], headers, VECTOR_BODY, now=VECTOR_TS + 299)

    def test_refusals(self) -> None:
        key = receiver.decode_secret(SECRET)
        ok = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIG}
        cases = {
            "tampered body": (ok, VECTOR_BODY.replace(b"2", b"3"), VECTOR_TS),
            "too old": (ok, VECTOR_BODY, VECTOR_TS + 301),
            "too new": (ok, VECTOR_BODY, VECTOR_TS - 301),
            "other id": ({**ok, "webhook-id": "msg_other"}, VECTOR_BODY, VECTOR_TS),
            "other timestamp": ({**ok, "webhook-timestamp": str(VECTOR_TS + 1)}, VECTOR_BODY, VECTOR_TS),
            "signed timestamp with a sign": ({**ok, "webhook-timestamp": "+" + str(VECTOR_TS)}, VECTOR_BODY, VECTOR_TS),
            "no signature": ({**ok, "webhook-signature": ""}, VECTOR_BODY, VECTOR_TS),
            "signature without version": ({**ok, "webhook-signature": VECTOR_SIG[3:]}, VECTOR_BODY, VECTOR_TS),
            "wrong version": ({**ok, "webhook-signature": "v2" + VECTOR_SIG[2:]}, VECTOR_BODY, VECTOR_TS),
            "missing id": ({k: v for k, v in ok.items() if k != "webhook-id"}, VECTOR_BODY, VECTOR_TS),
        }
        for name, (headers, body, now) in cases.items():
            with self.subTest(name):
                with self.assertRaises(receiver.VerificationError):
                    receiver.verify([key], headers, body, now=now)
        with self.assertRaises(receiver.VerificationError):
            receiver.verify([b"another key"], ok, VECTOR_BODY, now=VECTOR_TS)

    def test_decode_secret(self) -> None:
        self.assertEqual(receiver.decode_secret("whsec_aGVsbG8="), b"hello")
        self.assertEqual(receiver.decode_secret("plain-secret"), b"plain-secret")
        self.assertEqual(receiver.decode_secret("caf\u00e9"), "caf\u00e9".encode("utf-8"))
        for bad in ("", "whsec_", "whsec_!!!!"):
            with self.subTest(bad), self.assertRaises(ValueError) as cm:
                receiver.decode_secret(bad)
            self.assertNotIn("!!!!", str(cm.exception))


class TestReceiver(ServerCase):
    def test_valid_batch_processed_once(self) -> None:
        rec = self.start()
        status, answer = self.deliver("b_01JVALID", 3)
        self.assertEqual((status, answer), (200, {"received": 3, "duplicate": False}))
        self.assertEqual(len(rec.batches), 1)
        b = rec.batches[0]
        self.assertEqual((b["batch_id"], b["subscriber"], b["count"], b["attempt"]), ("b_01JVALID", "orders", 3, 1))
        self.assertEqual(b["events"][2]["data"], {"n": 2, "s": "caf\u00e9 \u00e9"})

    def test_duplicate_not_processed_again(self) -> None:
        rec = self.start()
        self.assertEqual(self.deliver("b_01JDUP")[0], 200)
        for attempt in (2, 3):
            status, answer = self.deliver("b_01JDUP", attempt=attempt, ts=int(time.time()) + 1)
            self.assertEqual((status, answer), (200, {"received": 2, "duplicate": True}))
        self.assertEqual(rec.calls, 1)
        # The halves of a split batch have ids of their own.
        self.assertEqual(self.deliver("b_01JDUP.1", 1), (200, {"received": 1, "duplicate": False}))
        self.assertEqual(rec.calls, 2)

    def test_tampered_body(self) -> None:
        rec = self.start()
        body = batch_body("b_01JTAMPER", 2)
        headers = hookbatch_headers(SECRET, "b_01JTAMPER", body)
        status, _ = self.post(body.replace(b'"n": 1', b'"n": 9'), headers)
        self.assertIn(status, (400, 401))
        status, _ = self.post(body, {**headers, "webhook-id": "b_01JOTHER"})
        self.assertEqual(status, 401)
        self.assertEqual(rec.calls, 0)

    def test_wrong_secret(self) -> None:
        rec = self.start()
        self.assertEqual(self.deliver("b_01JWRONG", secret="whsec_c29tZW9uZSBlbHNlJ3Mga2V5")[0], 401)
        # The base64 part of the right secret used as a raw secret.
        self.assertEqual(self.deliver("b_01JWRONG", secret=SECRET[6:])[0], 401)
        self.assertEqual(rec.calls, 0)
        # Refusals are not remembered as processed.
        self.assertEqual(self.deliver("b_01JWRONG")[0], 200)
        self.assertEqual(rec.calls, 1)

    def test_stale_and_missing_signature(self) -> None:
        rec = self.start()
        now = int(time.time())
        self.assertEqual(self.deliver("b_01JSTALE", ts=now - 600)[0], 401)
        self.assertEqual(self.deliver("b_01JSTALE", ts=now + 600)[0], 401)
        body = batch_body("b_01JSTALE", 1)
        headers = hookbatch_headers(SECRET, "b_01JSTALE", body)
        del headers["webhook-signature"]
        self.assertEqual(self.post(body, headers)[0], 401)
        self.assertEqual(rec.calls, 0)

    def test_raw_secret_and_rotation(self) -> None:
        rec = self.start("plain-secret-not-base64!")
        self.assertEqual(self.deliver("b_01JRAW", secret="plain-secret-not-base64!")[0], 200)
        # hookbatch during a rotation: signed with the new and the previous secret.
        self.assertEqual(self.deliver("b_01JROT", secret="whsec_bmV4dC1rZXk=",
                                      previous=("plain-secret-not-base64!",))[0], 200)
        self.assertEqual(rec.calls, 2)

    def test_processing_failure_is_retried(self) -> None:
        rec = self.start()
        rec.fail = 1
        self.assertEqual(self.deliver("b_01JFAIL")[0], 500)
        self.assertEqual(self.deliver("b_01JFAIL", attempt=2), (200, {"received": 2, "duplicate": False}))
        self.assertEqual(self.deliver("b_01JFAIL", attempt=3), (200, {"received": 2, "duplicate": True}))
        self.assertEqual((rec.calls, len(rec.batches)), (2, 1))

    def test_concurrent_duplicates_processed_once(self) -> None:
        rec = self.start()
        rec.block = threading.Event()
        results: list[tuple[int, dict]] = []
        lock = threading.Lock()

        def one(attempt: int) -> None:
            r = self.deliver("b_01JCONC", attempt=attempt)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one, args=(i + 1,)) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while rec.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)
        rec.block.set()
        for t in threads:
            t.join(10)
        self.assertEqual(rec.calls, 1)
        self.assertEqual(sorted(r[1]["duplicate"] for r in results), [False] + [True] * 5)
        self.assertTrue(all(r[0] == 200 for r in results))

    def test_malformed(self) -> None:
        rec = self.start(max_body_bytes=4096)
        # Over the limit: 413, so that hookbatch splits the batch.
        self.assertEqual(self.deliver("b_01JBIG", 100)[0], 413)
        body = batch_body("b_01JBODY", 1)
        self.assertEqual(self.post(body, hookbatch_headers(SECRET, "b_01JOTHER", body))[0], 400)
        bad = b'{"batch":true,"batch_id":"b_1","count":2,"events":[]}'
        self.assertEqual(self.post(bad, hookbatch_headers(SECRET, "b_1", bad))[0], 400)
        self.assertEqual(self.post(b"not json", {**hookbatch_headers(SECRET, "b_1", b"{}"),
                                                 **{"webhook-signature": receiver.sign(
                                                     receiver.decode_secret(SECRET), "b_1",
                                                     int(time.time()), b"not json")}})[0], 400)
        conn = http.client.HTTPConnection(*self.server.server_address[:2], timeout=10)
        conn.request("GET", "/hooks")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        self.assertEqual((resp.status, resp.getheader("Allow")), (405, "POST"))
        self.assertEqual(rec.calls, 0)


class TestDedup(unittest.TestCase):
    def test_window_and_cap(self) -> None:
        now = [1000.0]
        d = receiver.Dedup(window=3600, max_ids=2, clock=lambda: now[0])

        def mark(i: str) -> None:
            self.assertIs(d.begin(i), True)
            d.end(i, True)

        def seen(i: str) -> bool:
            r = d.begin(i)
            if r is True:
                d.end(i, False)
            return r is False

        mark("a")
        now[0] += 1800
        mark("b")
        self.assertTrue(seen("a") and seen("b"))
        now[0] += 1860
        self.assertFalse(seen("a"))
        self.assertTrue(seen("b"))
        mark("c")
        mark("d")
        self.assertFalse(seen("b"))
        self.assertTrue(seen("c") and seen("d"))
        self.assertIs(d.begin("e"), True)
        self.assertIsNone(d.begin("e", wait=0.01))
        d.end("e", True)
        self.assertTrue(seen("e"))


class TestHookbatchSignedFixture(ServerCase):
    """Deliveries signed by hookbatch's Go signing package."""

    def test_fixture(self) -> None:
        path = os.environ.get("HOOKBATCH_SIGNED_FIXTURE")
        if not path:
            self.skipTest("HOOKBATCH_SIGNED_FIXTURE not set (the Go test python_test.go sets it)")
        with open(path, encoding="utf-8") as f:
            cases = json.load(f)["cases"]
        self.assertTrue(cases)
        for c in cases:
            with self.subTest(c["name"]):
                rec = self.start(c["receiver_secret"])
                body = c["body"].encode("utf-8")
                status, answer = self.post(body, c["headers"])
                self.assertEqual(status, c["want_status"], answer)
                if c["want_status"] == 200:
                    self.assertEqual(answer["duplicate"], False)
                    status, answer = self.post(body, c["headers"])
                    self.assertEqual((status, answer["duplicate"]), (200, True))
                    self.assertEqual(rec.calls, 1)
                else:
                    self.assertEqual(rec.calls, 0)


if __name__ == "__main__":
    unittest.main()
