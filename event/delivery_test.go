package event

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseDelivery(t *testing.T) {
	body := ` { "batch" : true, "batch_id":"b_1", "extra":{"a":[1,2,{"b":null}]},"subscriber":"orders","count":2,` +
		`"events":[{"id":"e1","type":"t","timestamp":"2026-12-03T10:00:00Z","data":{"n":1}},` +
		`{"id":"e\u0032","type":"t","timestamp":"2026-12-03T10:00:01.5Z","data":null}], "\u0062atch":true } `
	d, err := ParseDelivery([]byte(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Batch || string(d.BatchID) != "b_1" || string(d.Subscriber) != "orders" || d.Count != 2 || len(d.Events) != 2 {
		t.Fatalf("got %+v", d)
	}
	if string(d.Events[0].Data) != `{"n":1}` || string(d.Events[1].ID) != "e2" || string(d.Events[1].Data) != "null" {
		t.Fatalf("events %q %q %q", d.Events[0].Data, d.Events[1].ID, d.Events[1].Data)
	}

	// Missing members are the caller's to check: zero values and Count -1.
	d, err = ParseDelivery([]byte(`{"batch":false}`), nil)
	if err != nil || d.Batch || d.BatchID != nil || d.Subscriber != nil || d.Count != -1 || d.Events != nil {
		t.Fatalf("got %+v, %v", d, err)
	}

	// Events are appended to the slice given, from its start.
	buf := make([]Event, 1, 8)
	d, err = ParseDelivery([]byte(`{"events":[{"type":"t","data":1}]}`), buf)
	if err != nil || len(d.Events) != 1 || &d.Events[0] != &buf[0] {
		t.Fatalf("events %+v, %v", d.Events, err)
	}
}

func TestParseDeliveryErrors(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{``, "unexpected end of input"},
		{`[]`, "body: must be a JSON object"},
		{`{"batch":"true"}`, `body: "batch": must be a boolean`},
		{`{"batch":tru}`, "invalid literal"},
		{`{"batch_id":1}`, `body: "batch_id": must be a string`},
		{`{"subscriber":null}`, `body: "subscriber": must be a string`},
		{`{"count":1.5}`, `body: "count": must be a non-negative integer`},
		{`{"count":-1}`, `body: "count": must be a non-negative integer`},
		{`{"count":99999999999999999999}`, `body: "count": must be a non-negative integer`},
		{`{"count":01}`, "unexpected"},
		{`{"events":{}}`, `body: "events": must be a non-empty array of event objects`},
		{`{"events":[]}`, "body: empty array"},
		{`{"events":[{"type":"t"}]}`, `event 0: "data": is required`},
		{`{"events":[{"type":"t","data":1,"x":2}]}`, `event 0: "x": unknown field`},
		{`{"events":[{"type":"t","data":1}],}`, "unexpected"},
		{`{"batch":true} x`, "unexpected data after the top-level value"},
		{`{"extra":[1,}`, "unexpected"},
		{"{\"batch_id\":\"\xff\"}", "invalid JSON"},
	} {
		_, err := ParseDelivery([]byte(c.body), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseDelivery(%q) = %v, want an error with %q", c.body, err, c.want)
		}
	}
}

// FuzzParseDelivery holds ParseDelivery to encoding/json: what it accepts
// is valid JSON and reads the same.
func FuzzParseDelivery(f *testing.F) {
	f.Add([]byte(`{"batch":true,"batch_id":"b","subscriber":"s","count":1,"events":[{"id":"e","type":"t","timestamp":"2026-12-03T10:00:00Z","data":[[{}]]}]}`))
	f.Add([]byte(`{"batch":false,"x":{"y":[1,"2",null]},"count":0}`))
	f.Add([]byte(`{"b\u0061tch":true,"batch_id":"\u00e9\n"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := ParseDelivery(body, nil)
		if err != nil {
			return
		}
		// encoding/json matches struct fields regardless of case: read
		// the members by their exact names instead.
		var members map[string]json.RawMessage
		if err := json.Unmarshal(body, &members); err != nil {
			t.Fatalf("ParseDelivery accepted %q; encoding/json: %v", body, err)
		}
		var want Delivery
		want.Count = -1
		get := func(name string, v any) {
			if raw, ok := members[name]; ok {
				if err := json.Unmarshal(raw, v); err != nil {
					t.Fatalf("%q: ParseDelivery accepted %s %s; encoding/json: %v", body, name, raw, err)
				}
			}
		}
		var id, sub *string
		var events []json.RawMessage
		get("batch", &want.Batch)
		get("batch_id", &id)
		get("subscriber", &sub)
		get("count", &want.Count)
		get("events", &events)
		same := func(b []byte, s *string) bool { return (b == nil) == (s == nil) && (s == nil || string(b) == *s) }
		if d.Batch != want.Batch || !same(d.BatchID, id) || !same(d.Subscriber, sub) || d.Count != want.Count || len(d.Events) != len(events) {
			t.Fatalf("%q: got %+v, encoding/json reads %+v %v %v %d events", body, d, want, id, sub, len(events))
		}
	})
}

func BenchmarkParseDelivery(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"batch":true,"batch_id":"b_01KBHZ4N3T0000000000000000","subscriber":"orders","count":100,"events":[`)
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"id":"e1.` + strings.Repeat("7", i%5+1) + `","type":"order.created","timestamp":"2026-12-03T10:00:00.123456789Z","data":`)
		sb.WriteString(`{"customer":"` + strings.Repeat("x", 250) + `","amount":1234}}`)
	}
	sb.WriteString("]}")
	body := []byte(sb.String())
	b.Run("ParseDelivery", func(b *testing.B) {
		evs := make([]Event, 0, 100)
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			d, err := ParseDelivery(body, evs)
			if err != nil || len(d.Events) != 100 {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v struct {
				Batch   bool   `json:"batch"`
				BatchID string `json:"batch_id"`
				Count   int    `json:"count"`
				Events  []struct {
					ID, Type, Timestamp string
					Data                json.RawMessage
				} `json:"events"`
			}
			if err := json.Unmarshal(body, &v); err != nil || len(v.Events) != 100 {
				b.Fatal(err)
			}
		}
	})
}

// TestParseDeliveryTakesStoredEvents: a receiver takes ids and types the
// ingest rules would refuse (a sender may have stored them under other
// rules); syntax, "type" and "data" still count.
func TestParseDeliveryTakesStoredEvents(t *testing.T) {
	long := strings.Repeat("x", 300)
	body := `{"events":[{"id":"a\tb\u0085","type":"` + long + `","timestamp":"2026-12-03T10:00:00Z","data":1},{"id":"` + long + `","type":"t","data":null}]}`
	d, err := ParseDelivery([]byte(body), nil)
	if err != nil || len(d.Events) != 2 || string(d.Events[0].ID) != "a\tb\u0085" || len(d.Events[1].ID) != 300 {
		t.Fatalf("got %+v, %v", d, err)
	}
	// The ingest parser still refuses both.
	for _, ev := range []string{`{"id":"a\tb","type":"t","data":1}`, `{"id":"` + long + `","type":"t","data":1}`, `{"type":"` + long + `","data":1}`} {
		if _, err := Parse(nil, []byte(ev), 0); err == nil {
			t.Errorf("Parse(%s) took it", ev)
		}
	}
	// A skipped member nesting too deeply is named in the error.
	deep := strings.Repeat("[", MaxDataDepth+1) + strings.Repeat("]", MaxDataDepth+1)
	if _, err := ParseDelivery([]byte(`{"extra":`+deep+`}`), nil); err == nil || !strings.Contains(err.Error(), `"extra": nests deeper`) {
		t.Errorf("deep member: %v", err)
	}
}

func TestCheckID(t *testing.T) {
	for _, c := range []struct{ id, want string }{
		{"evt_1", ""},
		{"ключ-1", ""},
		{strings.Repeat("k", MaxIDBytes), ""},
		{"", "must be 1-256 bytes"},
		{strings.Repeat("k", MaxIDBytes+1), "must be 1-256 bytes"},
		{"a\xffb", "must be valid UTF-8"},
		{"a\tb", msgIDControl},
		{"a\x7fb", msgIDControl},
		{"a\u0085b", msgIDControl},
	} {
		if got := CheckID([]byte(c.id)); got != c.want {
			t.Errorf("CheckID(%q) = %q, want %q", c.id, got, c.want)
		}
		// Parse holds "id" to the same rules (it sees only valid UTF-8).
		if c.want == "must be valid UTF-8" {
			continue
		}
		q, _ := json.Marshal(c.id)
		_, err := Parse(nil, []byte(`{"id":`+string(q)+`,"type":"t","data":1}`), 0)
		if (err == nil) != (c.want == "") {
			t.Errorf("Parse with id %q: %v; CheckID says %q", c.id, err, c.want)
		}
	}
}
