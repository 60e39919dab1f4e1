package relay

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/signing"
	"github.com/valyala/fasthttp"
)

// FuzzAuthenticate feeds authenticate arbitrary Authorization, signature
// headers and bodies. It must never panic, never accept a request without a
// configured token and a signature made with the key (checked here with
// crypto/hmac, not the signing package), and always accept one that has
// both. The mode bits replace fuzzed values with correct ones so that the
// accepting paths are explored too: 1 the token, 2 the hex signature, 4 the
// Standard Webhooks signature (timestamp now).
func FuzzAuthenticate(f *testing.F) {
	now := time.Unix(1_760_000_000, 0)
	nowTS := strconv.FormatInt(now.Unix(), 10)
	key, err := signing.DecodeSecret(ingestSecret)
	if err != nil {
		f.Fatal(err)
	}
	mac := func(parts ...[]byte) []byte {
		h := hmac.New(sha256.New, key)
		for _, p := range parts {
			h.Write(p)
		}
		return h.Sum(nil)
	}
	body := []byte(`{"type":"t","data":1}`)
	hexSig := "sha256=" + hex.EncodeToString(mac(body))
	stdSig := "v1," + base64.StdEncoding.EncodeToString(mac([]byte("msg_1."+nowTS+"."), body))

	f.Add("Bearer "+tokenA, hexSig, "", "", "", body, uint8(0))
	f.Add("Bearer "+tokenB, "", "msg_1", nowTS, stdSig, body, uint8(0))
	f.Add("bearer  "+tokenA+" ", strings.ToUpper(hexSig), "msg_1", nowTS, "v2,x "+stdSig, body, uint8(0))
	f.Add("Bearer "+tokenA, hexSig, "msg_1", "0"+nowTS, stdSig, body, uint8(0))
	f.Add("Bearer "+tokenA, "", "msg_1", strconv.FormatInt(now.Unix()-600, 10), stdSig, body, uint8(4))
	f.Add("Bearer "+tokenA+"x", hexSig, "", "", "", body, uint8(0))
	f.Add("Bearer", "sha256=", "", "", "v1,", []byte{}, uint8(0))
	f.Add("", "", "", "", "", []byte(nil), uint8(7))
	f.Add("Basic "+tokenA, "sha256="+strings.Repeat("0", 64), "\x00", "-1", "v1,====", []byte{0xff}, uint8(6))
	f.Add("Bearer "+tokenA, "", "id with spaces", "99999999999999999999", "v1,a v1,b v1,c", body, uint8(1))

	g, err := newGuard(config.Ingest{AuthTokens: []string{tokenA, tokenB}, SigningSecret: ingestSecret})
	if err != nil {
		f.Fatal(err)
	}
	g.now = func() time.Time { return now }

	f.Fuzz(func(t *testing.T, auth, xsig, wid, wts, wsig string, body []byte, mode uint8) {
		var ctx fasthttp.RequestCtx
		h := &ctx.Request.Header
		set := func(name, v string) {
			if v != "" {
				h.Set(name, v)
			}
		}
		if mode&1 != 0 {
			auth = "Bearer " + tokenA
		}
		set("Authorization", auth)
		if mode&2 != 0 {
			xsig = "sha256=" + hex.EncodeToString(mac(body))
		}
		set("X-Webhook-Signature", xsig)
		set("webhook-id", wid)
		if mode&4 != 0 {
			wts = nowTS
			if len(h.Peek("webhook-id")) == 0 {
				set("webhook-id", "msg_1")
			}
			// Signed over the id as the header holds it.
			id := h.Peek("webhook-id")
			wsig = "v1," + base64.StdEncoding.EncodeToString(mac(id, []byte("."+nowTS+"."), body))
		}
		set("webhook-timestamp", wts)
		set("webhook-signature", wsig)

		e := g.authenticate(&ctx, body)
		if e != nil {
			if e.status != fasthttp.StatusUnauthorized {
				t.Fatalf("refused with status %d, want 401", e.status)
			}
			for _, secret := range []string{tokenA, tokenB, ingestSecret} {
				if strings.Contains(e.msg, secret) {
					t.Fatalf("error %q holds a secret", e.msg)
				}
			}
			if tok := bytes.TrimSpace(h.Peek("Authorization")); len(tok) > 8 && strings.Contains(e.msg, string(tok)) {
				t.Fatalf("error %q holds the presented token", e.msg)
			}
		}
		if mode&7 == 7 || (mode&3 == 3 && len(h.Peek("webhook-id")) == 0 && len(h.Peek("webhook-timestamp")) == 0 && len(h.Peek("webhook-signature")) == 0) {
			if e != nil {
				t.Fatalf("refused a request with the right token and signatures: %s", e.msg)
			}
		}
		if e != nil {
			return
		}

		// Accepted: the token is one of the configured ones...
		a := h.Peek("Authorization")
		if len(a) < 7 || !strings.EqualFold(string(a[:7]), "Bearer ") {
			t.Fatalf("accepted Authorization %q", a)
		}
		if tok := string(bytes.TrimSpace(a[7:])); tok != tokenA && tok != tokenB {
			t.Fatalf("accepted token %q", tok)
		}
		// ...some signature is present, and each present is the key's.
		x, id, ts, std := h.Peek("X-Webhook-Signature"), h.Peek("webhook-id"), h.Peek("webhook-timestamp"), h.Peek("webhook-signature")
		if len(x) == 0 && len(std) == 0 {
			t.Fatal("accepted without a signature")
		}
		if len(x) > 0 {
			got, ok := bytes.CutPrefix(x, []byte("sha256="))
			want := hex.EncodeToString(mac(body))
			if !ok || !strings.EqualFold(string(got), want) {
				t.Fatalf("accepted X-Webhook-Signature %q, want sha256=%s", x, want)
			}
		}
		if len(std) > 0 {
			n, err := strconv.ParseUint(string(ts), 10, 63)
			if err != nil || ts[0] == '+' {
				t.Fatalf("accepted webhook-timestamp %q", ts)
			}
			if d := int64(n) - now.Unix(); d > 300 || d < -300 {
				t.Fatalf("accepted webhook-timestamp %q, %ds from now", ts, d)
			}
			want := "v1," + base64.StdEncoding.EncodeToString(mac(id, []byte("."+strconv.FormatUint(n, 10)+"."), body))
			found := false
			for _, entry := range strings.Split(string(std), " ") {
				found = found || entry == want
			}
			if !found {
				t.Fatalf("accepted webhook-signature %q for id %q, ts %q: want an entry %s", std, id, ts, want)
			}
		}
	})
}
