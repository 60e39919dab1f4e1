// Tests of receiver.js: npm ci && node --test
//
// Deliveries are signed here with node:crypto the way hookbatch signs them
// (checked against the Standard Webhooks specification's test vector). When
// HOOKBATCH_SIGNED_FIXTURE names a JSON file of deliveries signed by
// hookbatch's own Go signing package (examples/receivers/go/node_test.go
// writes one), those are replayed against the receiver too.

"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const { test } = require("node:test");
const { Webhook } = require("standardwebhooks");
const { createReceiver, newWebhook, Dedup } = require("./receiver.js");

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const quiet = { info() {}, warn() {} };

function keyOf(secret) {
  return secret.startsWith("whsec_") ? Buffer.from(secret.slice(6), "base64") : Buffer.from(secret, "utf8");
}

function batchBody(id, n) {
  const events = [];
  for (let i = 0; i < n; i++) {
    events.push(`{"id":"evt_${i}","type":"order.created","timestamp":"2026-12-03T10:00:00Z","data":{"n": ${i}, "s":"café \\u00e9"}}`);
  }
  return Buffer.from(`{"batch":true,"batch_id":${JSON.stringify(id)},"subscriber":"orders","count":${n},"events":[${events.join(",")}]}`);
}

// Headers of a delivery as hookbatch makes them (DESIGN §6).
function hookbatchHeaders(secret, id, body, { attempt = 1, ts = Math.floor(Date.now() / 1000), previous = [] } = {}) {
  const keys = [secret, ...previous].map(keyOf);
  const std = keys
    .map((k) => `v1,${crypto.createHmac("sha256", k).update(`${id}.${ts}.`).update(body).digest("base64")}`)
    .join(" ");
  let count = 0;
  try {
    count = JSON.parse(body.toString()).count ?? 0;
  } catch {}
  return {
    "Content-Type": "application/json",
    "User-Agent": "hookbatch/test",
    "X-Webhook-Batch": "true",
    "X-Webhook-Batch-Id": id,
    "X-Webhook-Batch-Count": String(count),
    "X-Webhook-Attempt": String(attempt),
    "X-Webhook-Signature": `sha256=${crypto.createHmac("sha256", keys[0]).update(body).digest("hex")}`,
    "webhook-id": id,
    "webhook-timestamp": String(ts),
    "webhook-signature": std,
  };
}

// start runs a receiver for secret on a free port; returns its URL and a
// record of what it processed.
async function start(t, secret = SECRET, options = {}) {
  const rec = { batches: [], calls: 0, fail: 0, block: null };
  const receiver = createReceiver({
    secret,
    log: quiet,
    ...options,
    process: async (batch) => {
      rec.calls++;
      if (rec.block) await rec.block;
      if (rec.fail > 0) {
        rec.fail--;
        throw new Error("database unavailable");
      }
      rec.batches.push(batch);
    },
  });
  const server = http.createServer(receiver);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  }));
  rec.url = `http://127.0.0.1:${server.address().port}/hooks`;
  return rec;
}

async function post(url, body, headers) {
  const resp = await fetch(url, { method: "POST", body, headers });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null, headers: resp.headers };
}

function deliver(rec, id, n = 2, secret = SECRET, opts = {}) {
  const body = batchBody(id, n);
  return post(rec.url, body, hookbatchHeaders(secret, id, body, opts));
}

test("specification test vector, with this file's signer and the library", () => {
  const id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
  const body = Buffer.from('{"test": 2432232314}');
  const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
  assert.equal(hookbatchHeaders(SECRET, id, body, { ts: 1614265330 })["webhook-signature"], want);
  assert.equal(new Webhook(SECRET).sign(id, new Date(1614265330 * 1000), body), want);
});

test("newWebhook: raw secrets are UTF-8 bytes; bad secrets are refused without quoting them", () => {
  const raw = "plain-sécret";
  const ts = new Date();
  const got = newWebhook(raw).sign("b_1", ts, Buffer.from("{}"));
  const want = hookbatchHeaders(raw, "b_1", Buffer.from("{}"), { ts: Math.floor(ts / 1000) })["webhook-signature"];
  assert.equal(got, want);
  for (const bad of ["", "whsec_", "whsec_!!!not-base64"]) {
    assert.throws(() => newWebhook(bad), (err) => !err.message.includes("not-base64"));
  }
});

test("valid batch: 200 and processed once", async (t) => {
  const rec = await start(t);
  const a = await deliver(rec, "b_01JVALID", 3);
  assert.equal(a.status, 200);
  assert.deepEqual(a.body, { received: 3, duplicate: false });
  assert.equal(rec.batches.length, 1);
  const b = rec.batches[0];
  assert.equal(b.batch_id, "b_01JVALID");
  assert.equal(b.subscriber, "orders");
  assert.equal(b.attempt, 1);
  assert.deepEqual(b.events[2].data, { n: 2, s: "café é" });
});

test("duplicate batch id: 200 and not processed again", async (t) => {
  const rec = await start(t);
  assert.equal((await deliver(rec, "b_01JDUP")).status, 200);
  for (const attempt of [2, 3]) {
    const a = await deliver(rec, "b_01JDUP", 2, SECRET, { attempt, ts: Math.floor(Date.now() / 1000) + 1 });
    assert.equal(a.status, 200);
    assert.deepEqual(a.body, { received: 2, duplicate: true });
  }
  assert.equal(rec.calls, 1);
  // The halves of a split batch have ids of their own.
  assert.deepEqual((await deliver(rec, "b_01JDUP.1", 1)).body, { received: 1, duplicate: false });
  assert.equal(rec.calls, 2);
});

test("tampered body: 401", async (t) => {
  const rec = await start(t);
  const body = batchBody("b_01JTAMPER", 2);
  const headers = hookbatchHeaders(SECRET, "b_01JTAMPER", body);
  const tampered = Buffer.from(body.toString().replace('"n": 1', '"n": 9'));
  assert.notDeepEqual(tampered, body);
  assert.ok([400, 401].includes((await post(rec.url, tampered, headers)).status));
  assert.equal((await post(rec.url, body, { ...headers, "webhook-id": "b_01JOTHER" })).status, 401);
  assert.equal(rec.calls, 0);
});

test("wrong secret: 401; the right one afterwards is processed", async (t) => {
  const rec = await start(t);
  assert.equal((await deliver(rec, "b_01JWRONG", 1, "whsec_c29tZW9uZSBlbHNlJ3Mga2V5")).status, 401);
  assert.equal((await deliver(rec, "b_01JWRONG", 1, SECRET.slice(6))).status, 401);
  assert.equal(rec.calls, 0);
  assert.equal((await deliver(rec, "b_01JWRONG", 1)).status, 200);
  assert.equal(rec.calls, 1);
});

test("stale, future and missing signatures: 401", async (t) => {
  const rec = await start(t);
  const now = Math.floor(Date.now() / 1000);
  assert.equal((await deliver(rec, "b_01JSTALE", 1, SECRET, { ts: now - 600 })).status, 401);
  assert.equal((await deliver(rec, "b_01JSTALE", 1, SECRET, { ts: now + 600 })).status, 401);
  const body = batchBody("b_01JSTALE", 1);
  const headers = hookbatchHeaders(SECRET, "b_01JSTALE", body);
  delete headers["webhook-signature"];
  assert.equal((await post(rec.url, body, headers)).status, 401);
  assert.equal(rec.calls, 0);
});

test("raw secret and key rotation", async (t) => {
  const raw = "plain-secret-not-base64!";
  const rec = await start(t, raw);
  assert.equal((await deliver(rec, "b_01JRAW", 1, raw)).status, 200);
  assert.equal((await deliver(rec, "b_01JROT", 1, "whsec_bmV4dC1rZXk=", { previous: [raw] })).status, 200);
  assert.equal(rec.calls, 2);
});

test("processing failure: 500, then the retry is processed", async (t) => {
  const rec = await start(t);
  rec.fail = 1;
  assert.equal((await deliver(rec, "b_01JFAIL")).status, 500);
  assert.deepEqual((await deliver(rec, "b_01JFAIL", 2, SECRET, { attempt: 2 })).body, { received: 2, duplicate: false });
  assert.deepEqual((await deliver(rec, "b_01JFAIL", 2, SECRET, { attempt: 3 })).body, { received: 2, duplicate: true });
  assert.equal(rec.calls, 2);
  assert.equal(rec.batches.length, 1);
});

test("concurrent deliveries of one batch: processed once", async (t) => {
  const rec = await start(t);
  let release;
  rec.block = new Promise((resolve) => {
    release = resolve;
  });
  const pending = [];
  for (let i = 1; i <= 6; i++) pending.push(deliver(rec, "b_01JCONC", 2, SECRET, { attempt: i }));
  while (rec.calls === 0) await new Promise((r) => setTimeout(r, 1));
  await new Promise((r) => setTimeout(r, 50));
  release();
  const answers = await Promise.all(pending);
  assert.ok(answers.every((a) => a.status === 200));
  assert.deepEqual(answers.map((a) => a.body.duplicate).sort(), [false, true, true, true, true, true]);
  assert.equal(rec.calls, 1);
});

test("malformed deliveries", async (t) => {
  const rec = await start(t, SECRET, { maxBodyBytes: 4096 });
  assert.equal((await deliver(rec, "b_01JBIG", 100)).status, 413);
  const body = batchBody("b_01JBODY", 1);
  assert.equal((await post(rec.url, body, hookbatchHeaders(SECRET, "b_01JOTHER", body))).status, 400);
  const bad = Buffer.from('{"batch":true,"batch_id":"b_1","count":2,"events":[]}');
  assert.equal((await post(rec.url, bad, hookbatchHeaders(SECRET, "b_1", bad))).status, 400);
  const notJSON = Buffer.from("not json");
  assert.equal((await post(rec.url, notJSON, hookbatchHeaders(SECRET, "b_1", notJSON))).status, 400);
  const resp = await fetch(rec.url);
  await resp.text();
  assert.equal(resp.status, 405);
  assert.equal(resp.headers.get("allow"), "POST");
  assert.equal(rec.calls, 0);
});

test("Dedup window and cap", async () => {
  let now = 1_000_000;
  const d = new Dedup({ windowMs: 3600_000, max: 2, now: () => now });
  const mark = async (id) => {
    assert.equal(await d.begin(id), true);
    d.end(id, true);
  };
  const seen = async (id) => {
    const first = await d.begin(id);
    if (first) d.end(id, false);
    return !first;
  };
  await mark("a");
  now += 1800_000;
  await mark("b");
  assert.ok((await seen("a")) && (await seen("b")));
  now += 1860_000;
  assert.equal(await seen("a"), false);
  assert.equal(await seen("b"), true);
  await mark("c");
  await mark("d");
  assert.equal(await seen("b"), false);
  assert.ok((await seen("c")) && (await seen("d")));
});

test("deliveries signed by hookbatch's Go signing package", async (t) => {
  const path = process.env.HOOKBATCH_SIGNED_FIXTURE;
  if (!path) {
    t.skip("HOOKBATCH_SIGNED_FIXTURE not set (the Go test node_test.go sets it)");
    return;
  }
  const { cases } = JSON.parse(fs.readFileSync(path, "utf8"));
  assert.ok(cases.length > 0);
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const rec = await start(t, c.receiver_secret);
      const body = Buffer.from(c.body, "utf8");
      const a = await post(rec.url, body, c.headers);
      assert.equal(a.status, c.want_status, JSON.stringify(a.body));
      if (c.want_status === 200) {
        assert.equal(a.body.duplicate, false);
        const again = await post(rec.url, body, c.headers);
        assert.equal(again.status, 200);
        assert.equal(again.body.duplicate, true);
        assert.equal(rec.calls, 1);
      } else {
        assert.equal(rec.calls, 0);
      }
    });
  }
});
