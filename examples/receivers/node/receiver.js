#!/usr/bin/env node
// Example hookbatch subscriber in Node.js: verifies each delivered batch with
// the official Standard Webhooks library (npm "standardwebhooks"),
// de-duplicates by batch id and hands each new batch to a processing
// function once.
//
// hookbatch delivers at least once: a batch whose 2xx answer was lost is sent
// again with the same batch_id, so a repeat is answered 200 without being
// processed again. Processed ids are remembered in memory for a window; a
// real receiver records them in the same transaction as the batch's effects.
//
// Answers, and what hookbatch does with them:
//
//   200  processed now, or a duplicate of a processed batch: delivered
//   401  signature missing, wrong or outside the tolerance: permanent failure
//   400  verified but not a well-formed batch: permanent failure
//   413  body over the limit: hookbatch splits the batch in half
//   500  processing failed: hookbatch retries with backoff
//
// Run it:
//
//   npm ci
//   WEBHOOK_SECRET=whsec_... node receiver.js --listen 127.0.0.1:9090

"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Webhook } = require("standardwebhooks");

const SECRET_ENV = "WEBHOOK_SECRET";

/**
 * The Standard Webhooks verifier for a hookbatch secret. hookbatch takes the
 * key of a "whsec_" secret from its base64 part and uses any other secret's
 * own (UTF-8) bytes as the key; `new Webhook(secret)` would base64-decode
 * such a secret, so it gets the "raw" format (as a Buffer: the library turns
 * a raw string into bytes one UTF-16 unit each, not as UTF-8).
 */
function newWebhook(secret) {
  if (typeof secret !== "string" || secret === "") {
    throw new Error("empty secret");
  }
  try {
    if (secret.startsWith("whsec_")) {
      return new Webhook(secret);
    }
    return new Webhook(Buffer.from(secret, "utf8"), { format: "raw" });
  } catch {
    // Say what is wrong without passing on anything that may quote it.
    throw new Error("the secret is not whsec_<standard base64> (or is empty)");
  }
}

/**
 * Processed batch ids, remembered for a window and at most `max` of them.
 * Concurrent deliveries of one batch wait for each other, so a batch is
 * processed once even when hookbatch retries it (after a timeout) while the
 * first delivery is still being processed.
 */
class Dedup {
  constructor({ windowMs = 24 * 3600 * 1000, max = 1_000_000, now = Date.now } = {}) {
    this.windowMs = windowMs;
    this.max = max;
    this.now = now;
    this.done = new Map(); // id -> time processed, oldest first
    this.inFlight = new Map(); // id -> Promise settled when processing ends
    this.release = new Map(); // id -> function settling that promise
  }

  /** Resolves true: process the batch, then call end(); false: processed already. */
  async begin(id) {
    for (;;) {
      this.expire();
      if (this.done.has(id)) return false;
      const waiting = this.inFlight.get(id);
      if (!waiting) {
        this.inFlight.set(id, new Promise((resolve) => this.release.set(id, resolve)));
        return true;
      }
      await waiting; // then look again: it may have failed
    }
  }

  end(id, processed) {
    if (processed) {
      this.done.set(id, this.now());
      this.expire();
    }
    const release = this.release.get(id);
    this.inFlight.delete(id);
    this.release.delete(id);
    if (release) release();
  }

  expire() {
    const now = this.now();
    for (const [id, at] of this.done) {
      if (this.done.size <= this.max && now - at < this.windowMs) return;
      this.done.delete(id);
    }
  }
}

/**
 * A request listener for http.createServer that receives hookbatch batches.
 *
 * options.secret        the subscriber's secret as in hookbatch's config
 * options.process       async (batch) => void, called once per new batch;
 *                       throwing makes the answer 500, so hookbatch retries
 * options.maxBodyBytes  body limit (8 MiB); larger bodies get 413
 * options.dedup         a Dedup (default: 24h window)
 * options.log           { info, warn } (console)
 */
function createReceiver(options) {
  const wh = newWebhook(options.secret);
  if (typeof options.process !== "function") {
    throw new Error("no process function");
  }
  const maxBodyBytes = options.maxBodyBytes ?? 8 << 20;
  const dedup = options.dedup ?? new Dedup();
  const log = options.log ?? console;

  function answer(res, status, body, headers = {}) {
    const data = `${JSON.stringify(body)}\n`;
    res.writeHead(status, {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(data),
      ...headers,
    });
    res.end(data);
  }

  function refuse(req, res, status, error, headers) {
    log.warn(`refused delivery of ${JSON.stringify(req.headers["x-webhook-batch-id"] ?? "")}: ${status} ${error}`);
    answer(res, status, { error }, headers);
  }

  async function handle(req, res, body) {
    // Verify the raw bytes before looking inside them.
    try {
      wh.verify(body, req.headers, { jsonParse: false });
    } catch (err) {
      return refuse(req, res, 401, `signature: ${err.message}`);
    }

    let batch;
    try {
      batch = JSON.parse(body.toString("utf8"));
    } catch (err) {
      return refuse(req, res, 400, `body: ${err.message}`);
    }
    if (batch === null || typeof batch !== "object" || batch.batch !== true ||
        typeof batch.batch_id !== "string" || batch.batch_id === "") {
      return refuse(req, res, 400, 'body: not a batch ("batch": true and "batch_id" required)');
    }
    if (!Array.isArray(batch.events) || batch.count !== batch.events.length) {
      return refuse(req, res, 400, 'body: "count" does not match "events"');
    }
    // webhook-id and the body are signed; X-Webhook-Batch-Id is not, but
    // hookbatch sets all three to the batch id.
    if (req.headers["webhook-id"] !== batch.batch_id) {
      return refuse(req, res, 400, 'webhook-id differs from "batch_id"');
    }
    const headerID = req.headers["x-webhook-batch-id"];
    if (headerID && headerID !== batch.batch_id) {
      return refuse(req, res, 400, 'X-Webhook-Batch-Id differs from "batch_id"');
    }
    batch.attempt = Number.parseInt(req.headers["x-webhook-attempt"] ?? "0", 10) || 0;

    const id = batch.batch_id;
    if (!(await dedup.begin(id))) {
      log.info(`duplicate batch ${id} attempt ${batch.attempt}`);
      return answer(res, 200, { received: batch.events.length, duplicate: true });
    }
    try {
      await options.process(batch);
    } catch (err) {
      dedup.end(id, false);
      return refuse(req, res, 500, `processing failed: ${err?.message ?? err}`);
    }
    dedup.end(id, true);
    log.info(`batch ${id}: ${batch.events.length} events, attempt ${batch.attempt}`);
    return answer(res, 200, { received: batch.events.length, duplicate: false });
  }

  return function receiver(req, res) {
    if (req.method === "GET" && req.url === "/healthz") {
      return answer(res, 200, { ok: true });
    }
    if (req.method !== "POST") {
      return refuse(req, res, 405, "method not allowed", { Allow: "POST" });
    }
    const tooLarge = () =>
      refuse(req, res, 413, `body larger than ${maxBodyBytes} bytes`, { Connection: "close" });
    if (Number(req.headers["content-length"] ?? 0) > maxBodyBytes) {
      return tooLarge();
    }
    const chunks = [];
    let size = 0;
    let refused = false;
    req.on("data", (chunk) => {
      if (refused) return;
      size += chunk.length;
      if (size > maxBodyBytes) {
        refused = true;
        return tooLarge();
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (refused) return;
      handle(req, res, Buffer.concat(chunks, size)).catch((err) => {
        if (!res.headersSent) refuse(req, res, 500, `internal error: ${err.message}`);
      });
    });
    req.on("error", () => {
      refused = true;
    });
  };
}

function main() {
  const { values } = parseArgs({
    options: {
      listen: { type: "string", default: "127.0.0.1:9090" },
    },
  });
  const i = values.listen.lastIndexOf(":");
  const host = values.listen.slice(0, i).replace(/^\[|\]$/g, "") || undefined;
  const port = Number(values.listen.slice(i + 1));

  let receiver;
  try {
    receiver = createReceiver({
      secret: process.env[SECRET_ENV] ?? "",
      process: async (batch) => {
        for (const e of batch.events) {
          console.info(`event ${e.id} ${e.type} of batch ${batch.batch_id}`);
        }
      },
    });
  } catch (err) {
    console.error(`receiver: ${err.message} (set ${SECRET_ENV} to the subscriber's secret)`);
    process.exit(2);
  }
  const server = http.createServer(
    { requestTimeout: 60_000, headersTimeout: 10_000, keepAliveTimeout: 120_000 },
    receiver,
  );
  server.listen(port, host, () => console.info(`listening on ${values.listen}`));
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

module.exports = { createReceiver, newWebhook, Dedup, SECRET_ENV };

if (require.main === module) {
  main();
}
