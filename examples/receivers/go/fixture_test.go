package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fixtureCase is one delivery signed by hookbatch's signing package, for the
// Python and Node receivers' tests to replay (their test files read the file
// named by HOOKBATCH_SIGNED_FIXTURE).
type fixtureCase struct {
	Name           string            `json:"name"`
	ReceiverSecret string            `json:"receiver_secret"`
	Headers        map[string]string `json:"headers"`
	Body           string            `json:"body"`
	WantStatus     int               `json:"want_status"`
}

// writeSignedFixture writes deliveries signed now (the receivers' timestamp
// tolerance is 5 minutes) and returns the file's path.
func writeSignedFixture(t *testing.T) string {
	t.Helper()
	const (
		rawSecret  = "plain-sécret, ünïcode and all" // no whsec_ prefix: its UTF-8 bytes are the key
		nextSecret = "whsec_bmV4dC1rZXktZm9yLXJvdGF0aW9u"
		otherKey   = "whsec_c29tZW9uZSBlbHNlJ3Mga2V5"
	)
	now := time.Now()
	mk := func(name, receiverSecret, id string, n, want int, tamper bool, secret string, previous ...string) fixtureCase {
		body := batchBody(id, n)
		req := signedRequest(t, "http://fixture.invalid/hooks", id, 1, body, now, secret, previous...)
		if tamper {
			body = bytes.Replace(body, []byte(`"n": 0`), []byte(`"n": 7`), 1)
		}
		h := make(map[string]string, len(req.Header))
		for k := range req.Header {
			h[k] = req.Header.Get(k)
		}
		return fixtureCase{Name: name, ReceiverSecret: receiverSecret, Headers: h, Body: string(body), WantStatus: want}
	}
	cases := []fixtureCase{
		mk("whsec secret", testSecret, "b_01JFIXWHSEC", 3, 200, false, testSecret),
		mk("raw secret", rawSecret, "b_01JFIXRAW", 2, 200, false, rawSecret),
		mk("key rotation: signed with new and previous, receiver on previous", testSecret, "b_01JFIXROT", 1, 200, false, nextSecret, testSecret),
		mk("split half id", testSecret, "b_01JFIXWHSEC.2", 1, 200, false, testSecret),
		mk("wrong secret", testSecret, "b_01JFIXWRONG", 1, 401, false, otherKey),
		mk("tampered body", testSecret, "b_01JFIXTAMPER", 2, 401, true, testSecret),
	}
	data, err := json.MarshalIndent(map[string]any{"cases": cases}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "signed-fixture.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
