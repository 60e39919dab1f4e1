package event

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got := AppendString([]byte("x"), []byte(in))
		if string(got) != "x"+want {
			t.Fatalf("AppendString(%q) = %s, want %s", in, got[1:], want)
		}
		if !json.Valid(got[1:]) || !utf8.Valid(got) {
			t.Fatalf("AppendString(%q) = %s is not valid JSON", in, got[1:])
		}
		var s string
		if err := json.Unmarshal(got[1:], &s); err != nil {
			t.Fatal(err)
		}
		if utf8.ValidString(in) && s != in {
			t.Fatalf("AppendString(%q) decodes to %q", in, s)
		}
	}
	f("", `""`)
	f("plain text 123", `"plain text 123"`)
	f(`a"b\c/d`, `"a\"b\\c/d"`)
	f("\n\r\t\b\f", `"\n\r\t\b\f"`)
	f("\x00\x01\x1f\x7f", `"\u0000\u0001\u001f`+"\x7f"+`"`)
	f("é € 😀 \u2028", "\"é € 😀 \u2028\"")
	f("\xff", `"\ufffd"`)
	f("a\xc3", `"a\ufffd"`)
	f("\xed\xa0\x80z", `"\ufffd\ufffd\ufffdz"`)
	f("<script>&", `"<script>&"`)
}

func TestAppendJSON(t *testing.T) {
	r := Record{
		ID:        []byte(`evt_"1"`),
		Type:      []byte("order.created\n"),
		Timestamp: []byte("2026-12-03T10:00:00Z"),
		Data:      []byte("{ \"any\" :\n [1e400, 12345678901234567890, \"\\u00e9\"] }"),
	}
	got := AppendJSON([]byte("["), &r)
	want := `[{"id":"evt_\"1\"","type":"order.created\n","timestamp":"2026-12-03T10:00:00Z","data":{ "any" :` + "\n" + ` [1e400, 12345678901234567890, "\u00e9"] }}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	checkDeliveryJSON(t, got[1:], &r)

	// An empty record still makes valid JSON.
	checkDeliveryJSON(t, AppendJSON(nil, &Record{}), &Record{Data: []byte("null")})
}

// checkDeliveryJSON checks that b is valid JSON holding exactly r's values.
func checkDeliveryJSON(t *testing.T, b []byte, r *Record) {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("AppendJSON gave invalid JSON: %q", b)
	}
	var got struct {
		ID        *string         `json:"id"`
		Type      *string         `json:"type"`
		Timestamp *string         `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	str := func(name string, p *string, want []byte) {
		t.Helper()
		if p == nil || (utf8.Valid(want) && *p != string(want)) {
			t.Fatalf("%s: got %v, want %q in %q", name, p, want, b)
		}
	}
	str("id", got.ID, r.ID)
	str("type", got.Type, r.Type)
	str("timestamp", got.Timestamp, r.Timestamp)
	if !bytes.Equal(got.Data, r.Data) {
		t.Fatalf("data: got %q, want %q", got.Data, r.Data)
	}
}
