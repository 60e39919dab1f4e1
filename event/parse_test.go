package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	type want struct{ id, typ, ts, data string }
	absent := "<absent>"
	f := func(body string, wants ...want) {
		t.Helper()
		evs, err := Parse(nil, []byte(body), 0)
		if err != nil {
			t.Fatalf("Parse(%q): %v", body, err)
		}
		if len(evs) != len(wants) {
			t.Fatalf("Parse(%q): %d events, want %d", body, len(evs), len(wants))
		}
		for i, w := range wants {
			ev := evs[i]
			check := func(name string, got []byte, want string) {
				t.Helper()
				if want == absent {
					if got != nil {
						t.Fatalf("Parse(%q): event %d %s = %q, want absent", body, i, name, got)
					}
					return
				}
				if got == nil || string(got) != want {
					t.Fatalf("Parse(%q): event %d %s = %q, want %q", body, i, name, got, want)
				}
			}
			check("id", ev.ID, w.id)
			check("type", ev.Type, w.typ)
			check("timestamp", ev.Timestamp, w.ts)
			check("data", ev.Data, w.data)
		}
	}

	f(`{"id": "evt_123", "type": "order.created", "timestamp": "2026-12-03T10:00:00Z", "data": {"any": "json"}}`,
		want{"evt_123", "order.created", "2026-12-03T10:00:00Z", `{"any": "json"}`})
	f(`{"type":"a","data":null}`, want{absent, "a", absent, "null"})
	f(`{"data":1,"type":"a"}`, want{absent, "a", absent, "1"})
	f(" \t\r\n{ \"type\" : \"a\" , \"data\" : [ 1 , 2 ] } \n", want{absent, "a", absent, "[ 1 , 2 ]"})
	f(`[{"type":"a","data":true},{"type":"b","data":false,"id":"x"}]`,
		want{absent, "a", absent, "true"}, want{"x", "b", absent, "false"})
	f(`[ {"type":"a","data":"s"} ]`, want{absent, "a", absent, `"s"`})

	// Timestamps: anything time.Parse(time.RFC3339Nano) takes.
	f(`{"type":"a","data":0,"timestamp":"2026-12-03T10:00:00.123456789+02:00"}`,
		want{absent, "a", "2026-12-03T10:00:00.123456789+02:00", "0"})
	f(`{"type":"a","data":0,"timestamp":"2026-12-03T10:00:00-07:30"}`,
		want{absent, "a", "2026-12-03T10:00:00-07:30", "0"})

	// Escapes in values are decoded; in data they are kept as written.
	f(`{"id":"a\"b\\c\/d","type":"\u00e9v\u00C9nement \ud83d\ude00","data":"\u00e9\ud83d\ude00\n"}`,
		want{`a"b\c/d`, "évÉnement 😀", absent, `"\u00e9\ud83d\ude00\n"`})
	f(`{"type":"t\tab","data":0}`, want{absent, "t\tab", absent, "0"})
	f(`{"type":"€ 😀","data":"€ 😀"}`, want{absent, "€ 😀", absent, `"€ 😀"`})

	// Escaped keys.
	f(`{"\u0074ype":"a","\u0064\u0061\u0074\u0061":1,"i\u0064":"x","times\u0074amp":"2026-12-03T10:00:00Z"}`,
		want{"x", "a", "2026-12-03T10:00:00Z", "1"})
	f(`{"type":"a","d\u0061ta":1}`, want{absent, "a", absent, "1"})

	// Limits at their edges.
	f(`{"id":"`+strings.Repeat("x", 256)+`","type":"`+strings.Repeat("é", 128)+`","data":0}`,
		want{strings.Repeat("x", 256), strings.Repeat("é", 128), absent, "0"})
	f(`{"id":"`+strings.Repeat(`\u0078`, 256)+`","type":"a","data":0}`,
		want{strings.Repeat("x", 256), "a", absent, "0"})
}

func TestParseDataByteForByte(t *testing.T) {
	datas := []string{
		`null`, `true`, `false`, `0`, `-0`, `-0.0e-0`, `1e400`, `-1E+400`, `12345678901234567890`,
		`123456789012345678901234567890.123456789e-999`,
		`""`, `"\u0000\u001f\"\\\/\b\f\n\r\t"`, `"\uD83D\uDE00 \u00e9 é 😀"`,
		`{}`, `[]`, `{ }`, `[ ]`, "{\n\t\"a\" :\r\n [1 ,2,{\"b\":null}] ,\"\":{}}",
		`[[[[[[]]]]]]`, `{"a":{"b":{"c":[1,"x",true,false,null,-2.5e3]}}}`,
		`{"type":"nested","data":{"id":1}}`, `"` + strings.Repeat("長", 1000) + `"`,
	}
	for _, d := range datas {
		for _, body := range []string{
			`{"type":"a","data":` + d + `}`,
			`{"data":` + d + `,"type":"a"}`,
			"[{\"type\":\"a\",\"data\"  :  " + d + "  \n},{\"data\":" + d + ",\"type\":\"b\"}]",
		} {
			evs, err := Parse(nil, []byte(body), 0)
			if err != nil {
				t.Fatalf("Parse(%q): %v", body, err)
			}
			for _, ev := range evs {
				if string(ev.Data) != d {
					t.Fatalf("Parse(%q): data %q, want %q", body, ev.Data, d)
				}
				if cap(ev.Data) != len(ev.Data) {
					t.Fatalf("Parse(%q): data capacity %d reaches past the value", body, cap(ev.Data))
				}
			}
		}
	}
}

func TestParseAppendsToDst(t *testing.T) {
	dst := make([]Event, 1, 8)
	dst[0].Type = []byte("keep")
	dst, err := Parse(dst, []byte(`[{"type":"a","data":1},{"type":"b","data":2}]`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dst) != 3 || string(dst[0].Type) != "keep" || string(dst[2].Type) != "b" {
		t.Fatalf("got %d events: %q %q", len(dst), dst[0].Type, dst[len(dst)-1].Type)
	}
	// On error dst comes back as it was.
	dst2, err := Parse(dst, []byte(`[{"type":"c","data":1},{"type":"d"}]`), 0)
	if err == nil || len(dst2) != 3 || string(dst2[2].Type) != "b" {
		t.Fatalf("got %d events, err %v", len(dst2), err)
	}
	if dst[:4][3].Type != nil {
		t.Fatalf("discarded event still references the body")
	}
}

func TestParseErrors(t *testing.T) {
	f := func(body string, index int, field, wantMsg string) {
		t.Helper()
		evs, err := Parse(nil, []byte(body), 0)
		if err == nil {
			t.Fatalf("Parse(%.80q): no error, %d events", body, len(evs))
		}
		if len(evs) != 0 {
			t.Fatalf("Parse(%.80q): %d events with an error", body, len(evs))
		}
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("Parse(%.80q): %T %v, want *ParseError", body, err, err)
		}
		if pe.Index != index || pe.Field != field || !strings.Contains(pe.Error(), wantMsg) {
			t.Fatalf("Parse(%.80q): %#v\n%s\nwant index %d field %q message containing %q",
				body, pe, pe.Error(), index, field, wantMsg)
		}
	}
	const ok = `{"type":"a","data":1}`

	// Top level.
	f(``, -1, "", "body: invalid JSON at offset 0: unexpected end of input")
	f(`   `, -1, "", "offset 3: unexpected end of input")
	f(`[]`, -1, "", "body: empty array")
	f(` [ ] `, -1, "", "body: empty array")
	f(`"x"`, -1, "", "body: must be a JSON object or a non-empty array of objects")
	f(`null`, -1, "", "must be a JSON object")
	f(`x`, -1, "", "offset 0: unexpected character 'x'")
	f("\xef\xbb\xbf"+ok, -1, "", "offset 0: unexpected byte 0xef")
	f(ok+`x`, -1, "", "offset 21: unexpected data after the top-level value")
	f(ok+ok, -1, "", "unexpected data after the top-level value")
	f(ok+` [`, -1, "", "unexpected data after the top-level value")
	f(ok[:len(ok)-1], -1, "", "unexpected end of input")
	f(`[`+ok, -1, "", "unexpected end of input")
	f(`[`+ok+`,`, -1, "", "unexpected end of input")
	f(`[`+ok+`,]`, -1, "", "unexpected character ']'")
	f(`[`+ok+` `+ok+`]`, -1, "", "unexpected character '{'")
	f(`[`+ok+`}`, -1, "", "unexpected character '}'")
	f("\v"+ok, -1, "", "unexpected byte 0x0b")
	// Cut or broken where a field's value should start: the JSON, not the field.
	f(`{"type":`, -1, "", "offset 8: unexpected end of input")
	f(`{"type":"a","data":1,"id":`, -1, "", "unexpected end of input")
	f(`{"type":"a","data":1,"timestamp": `, -1, "", "unexpected end of input")
	f(`{"type":]`, -1, "", "unexpected character ']'")
	f(`{"type":}`, -1, "", "unexpected character '}'")

	// Array elements.
	f(`[1]`, 0, "", "event 0: must be a JSON object")
	f(`[`+ok+`,`+ok+`,"x"]`, 2, "", "event 2: must be a JSON object")
	f(`[`+ok+`,[]]`, 1, "", "event 1: must be a JSON object")
	f(`[`+ok+`,null]`, 1, "", "event 1: must be a JSON object")

	// Required fields.
	f(`{}`, 0, "type", `event 0: "type": is required`)
	f(`{"data":1}`, 0, "type", `"type": is required`)
	f(`{"type":"a"}`, 0, "data", `"data": is required`)
	f(`[`+ok+`,{"type":"a"}]`, 1, "data", `event 1: "data": is required`)

	// Unknown and duplicate keys.
	f(`{"type":"a","data":1,"extra":1}`, 0, "extra", `event 0: "extra": unknown field`)
	f(`{"Type":"a","data":1}`, 0, "Type", `"Type": unknown field`)
	f(`{"":1}`, 0, "", `event 0: unknown field`)
	f(`{"e\u0078tra":1}`, 0, "extra", `"extra": unknown field`)
	f(`{"\u0074ypes":1}`, 0, "types", `"types": unknown field`)
	f(`{"bad\u000akey":1}`, 0, "bad\nkey", `"bad\nkey": unknown field`)
	f(`{"`+strings.Repeat("k", 100)+`":1}`, 0, strings.Repeat("k", 64)+"...", "unknown field")
	f(`{"`+strings.Repeat(`\u0074`, 20)+`":1}`, 0, strings.Repeat("t", 20), "unknown field")
	f(`{"type":"a","data":1,"type":"b"}`, 0, "type", `event 0: "type": duplicate field`)
	f(`{"type":"a","data":1,"d\u0061ta":2}`, 0, "data", `"data": duplicate field`)
	f(`[`+ok+`,{"id":"a","id":"a","type":"a","data":1}]`, 1, "id", `event 1: "id": duplicate field`)
	f(`{"timestamp":"2026-12-03T10:00:00Z","timestamp":"2026-12-03T10:00:00Z"}`, 0, "timestamp", "duplicate field")

	// id.
	for _, v := range []string{`1`, `null`, `true`, `{}`, `[]`, `""`, `"` + strings.Repeat("x", 257) + `"`,
		`"` + strings.Repeat("é", 129) + `"`} {
		f(`[`+ok+`,{"type":"a","data":1,"id":`+v+`}]`, 1, "id", `event 1: "id": must be a string of 1-256 bytes`)
	}
	for _, v := range []string{`"a\nb"`, `"\u0000"`, `"\u007f"`, `"x\u0085"`, `"\u009f"`, "\"a\u0080\""} {
		f(`{"type":"a","data":1,"id":`+v+`}`, 0, "id", `"id": must not contain control characters`)
	}

	// type.
	for _, v := range []string{`1`, `null`, `false`, `{"a":1}`, `["a"]`, `""`, `"` + strings.Repeat("x", 129) + `"`,
		`"` + strings.Repeat("é", 129) + `"`, `"` + strings.Repeat(`\u00e9`, 129) + `"`} {
		f(`[`+ok+`,`+ok+`,`+ok+`,{"type":`+v+`,"data":1}]`, 3, "type", `event 3: "type": must be a string of 1-128 characters`)
	}

	// timestamp.
	for _, v := range []string{`1`, `null`, `""`, `"yesterday"`, `"2026-12-03"`, `"2026-12-03 10:00:00Z"`,
		`"2026-13-03T10:00:00Z"`, `"2026-12-03T10:00:00"`, `"2026-12-03T10:00:00Z "`, `"1700000000"`} {
		f(`{"type":"a","data":1,"timestamp":`+v+`}`, 0, "timestamp", `event 0: "timestamp": must be an RFC 3339 timestamp string`)
	}

	// data depth.
	f(`{"type":"a","data":`+strings.Repeat("[", 129)+strings.Repeat("]", 129)+`}`, 0, "data", `event 0: "data": nests deeper than 128 levels`)
	f(`[`+ok+`,{"type":"a","data":`+strings.Repeat(`{"a":`, 129)+`1`+strings.Repeat("}", 129)+`}]`, 1, "data", "nests deeper than 128 levels")
	f(`{"type":"a","data":`+strings.Repeat("[", 100000), 0, "data", "nests deeper than 128 levels")

	// JSON syntax, inside data and elsewhere.
	syntax := map[string]string{
		`{"type":"a","data":01}`:                     "unexpected character '1'",
		`{"type":"a","data":-}`:                      "unexpected character '}'",
		`{"type":"a","data":+1}`:                     "unexpected character '+'",
		`{"type":"a","data":.5}`:                     "unexpected character '.'",
		`{"type":"a","data":1.}`:                     "digit expected after '.'",
		`{"type":"a","data":1.e5}`:                   "digit expected after '.'",
		`{"type":"a","data":1e}`:                     "digit expected in exponent",
		`{"type":"a","data":1e+}`:                    "digit expected in exponent",
		`{"type":"a","data":0x10}`:                   "unexpected character 'x'",
		`{"type":"a","data":NaN}`:                    "unexpected character 'N'",
		`{"type":"a","data":Infinity}`:               "unexpected character 'I'",
		`{"type":"a","data":tru}`:                    "invalid literal, expected true",
		`{"type":"a","data":nul}`:                    "invalid literal, expected null",
		`{"type":"a","data":True}`:                   "unexpected character 'T'",
		`{"type":"a","data":nullx}`:                  "unexpected character 'x'",
		`{"type":"a","data":'x'}`:                    "unexpected character '\\''",
		`{"type":"a","data":[1,]}`:                   "unexpected character ']'",
		`{"type":"a","data":[,1]}`:                   "unexpected character ','",
		`{"type":"a","data":[1 2]}`:                  "unexpected character '2'",
		`{"type":"a","data":{"a":1,}}`:               "unexpected character '}'",
		`{"type":"a","data":{"a" 1}}`:                "unexpected character '1'",
		`{"type":"a","data":{a:1}}`:                  "unexpected character 'a'",
		`{"type":"a","data":{"a":}}`:                 "unexpected character '}'",
		`{"type":"a","data":{1:1}}`:                  "unexpected character '1'",
		`{"type":"a","data":[}`:                      "unexpected character '}'",
		`{"type":"a","data":{]}`:                     "unexpected character ']'",
		`{"type":"a","data":[1}`:                     "unexpected character '}'",
		`{"type":"a","data":{"a":1]}`:                "unexpected character ']'",
		`{"type":"a","data":[1]]}`:                   "unexpected character ']'",
		`{"type":"a","data":"\x"}`:                   "invalid escape in string",
		`{"type":"a","data":"\U0041"}`:               "invalid escape in string",
		`{"type":"a","data":"\u00g0"}`:               `invalid \u escape`,
		`{"type":"a","data":"\u00"}`:                 `invalid \u escape`,
		`{"type":"a","data":"\ud800"}`:               "unpaired surrogate",
		`{"type":"a","data":"\ud800\u0041"}`:         "unpaired surrogate",
		`{"type":"a","data":"\ud800\ud800"}`:         "unpaired surrogate",
		`{"type":"a","data":"\udc00\ud800"}`:         "unpaired surrogate",
		`{"type":"a","data":"\ud800x"}`:              "unpaired surrogate",
		"{\"type\":\"a\",\"data\":\"a\tb\"}":         "control character in string",
		"{\"type\":\"a\",\"data\":\"a\x00b\"}":       "control character in string",
		"{\"type\":\"a\",\"data\":\"\xff\"}":         "invalid UTF-8 in string",
		"{\"type\":\"a\",\"data\":\"\xc0\xaf\"}":     "invalid UTF-8 in string", // overlong '/'
		"{\"type\":\"a\",\"data\":\"\xed\xa0\x80\"}": "invalid UTF-8 in string", // encoded surrogate
		"{\"type\":\"a\",\"data\":\"\xe2\x82\"}":     "invalid UTF-8 in string", // truncated
		"{\"type\":\"\xff\",\"data\":1}":             "invalid UTF-8 in string",
		"{\"\xff\":1}":                               "invalid UTF-8 in string",
		`{"type":"a","data":"abc`:                    "unexpected end of input in string",
		`{"type":"a","data":"abc\`:                   "unexpected end of input in string",
		`{"type":"a","data":`:                        "unexpected end of input",
		`{"type":"a","data":[1,`:                     "unexpected end of input",
		`{"type":"a","data":{"a"`:                    "unexpected end of input",
		`{"type":"a","data":{"a":`:                   "unexpected end of input",
		`{"type":"a","data":1`:                       "unexpected end of input",
		`{"type":"a" "data":1}`:                      "unexpected character '\"'",
		`{"type":"a",}`:                              "unexpected character '}'",
		`{"type":"a","data":1,}`:                     "unexpected character '}'",
		`{"type"}`:                                   "unexpected character '}'",
		`{type:"a"}`:                                 "unexpected character 't'",
		`{"type":"a";"data":1}`:                      "unexpected character ';'",
		"{\"type\":\"a\",\"data\":\u00a01}":          "unexpected byte 0xc2",
	}
	for body, msg := range syntax {
		f(body, -1, "", "body: invalid JSON at offset ")
		f(body, -1, "", msg)
	}
}

func TestParseErrorOffset(t *testing.T) {
	_, err := Parse(nil, []byte(`{"type":"a","data":[1,2,x]}`), 0)
	if err == nil || err.Error() != "body: invalid JSON at offset 24: unexpected character 'x'" {
		t.Fatalf("got %v", err)
	}
}

func TestParseDepth(t *testing.T) {
	f := func(depth int, open, close string, wantErr bool) {
		t.Helper()
		body := `{"type":"a","data":` + strings.Repeat(open, depth) + "1" + strings.Repeat(close, depth) + `}`
		evs, err := Parse(nil, []byte(body), 0)
		if wantErr {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != "data" {
				t.Fatalf("depth %d %s: got %v, want a depth error", depth, open, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("depth %d %s: %v", depth, open, err)
		}
		if string(evs[0].Data) != body[len(`{"type":"a","data":`):len(body)-1] {
			t.Fatalf("depth %d: data not preserved", depth)
		}
	}
	for _, d := range []int{0, 1, 2, 63, 64, 65, 127, 128} {
		f(d, "[", "]", false)
		f(d, `{"k":`, "}", false)
	}
	// Two levels each, and a third for the empty array inside:
	// 63 of them reach depth 127, 64 reach 129.
	for _, d := range []int{0, 1, 32, 63} {
		f(d, `[{"k":[],"j":`, "}]", false)
	}
	f(64, `[{"k":[],"j":`, "}]", true)
	f(129, "[", "]", true)
	f(129, `{"k":`, "}", true)
	f(200, `[0,`, "]", true)

	// Mixed nesting that closes and reopens stays within the limit.
	body := `{"type":"a","data":[` + strings.Repeat(strings.Repeat("[", 127)+strings.Repeat("]", 127)+",", 3) + `{"a":` + strings.Repeat("{\"b\":", 126) + "1" + strings.Repeat("}", 127) + `]}`
	if _, err := Parse(nil, []byte(body), 0); err != nil {
		t.Fatalf("mixed nesting: %v", err)
	}
	if !json.Valid([]byte(body)) {
		t.Fatalf("test body is not valid JSON")
	}
}

func TestParseTooManyEvents(t *testing.T) {
	const ok = `{"type":"a","data":1}`
	arr := func(n int, tail string) []byte {
		return []byte("[" + strings.TrimSuffix(strings.Repeat(ok+",", n), ",") + tail)
	}
	f := func(body []byte, max int, wantN int, wantErr error) {
		t.Helper()
		evs, err := Parse(nil, body, max)
		if !errors.Is(err, wantErr) {
			t.Fatalf("Parse(%d events, max %d): err %v, want %v", bytes.Count(body, []byte(ok)), max, err, wantErr)
		}
		if len(evs) != wantN {
			t.Fatalf("Parse: %d events, want %d", len(evs), wantN)
		}
	}
	f(arr(3, "]"), 3, 3, nil)
	f(arr(3, "]"), 0, 3, nil)
	f(arr(3, "]"), -1, 3, nil)
	f(arr(4, "]"), 3, 0, ErrTooManyEvents)
	f([]byte(ok), 1, 1, nil)
	// The limit stops parsing at once: what follows is not looked at.
	f(arr(2, `,{"broken`), 2, 0, ErrTooManyEvents)
	f(arr(2, `,"x`), 2, 0, ErrTooManyEvents)
	if _, err := Parse(nil, arr(2, `,{"broken`), 3); err == nil || errors.Is(err, ErrTooManyEvents) {
		t.Fatalf("within the limit the broken element is parsed: got %v", err)
	}
}

func TestParseErrorString(t *testing.T) {
	f := func(e ParseError, want string) {
		t.Helper()
		if got := e.Error(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	f(ParseError{Index: 3, Field: "type", Msg: "must be a string of 1-128 characters"}, `event 3: "type": must be a string of 1-128 characters`)
	f(ParseError{Index: 0, Msg: "must be a JSON object"}, `event 0: must be a JSON object`)
	f(ParseError{Index: -1, Msg: "empty array"}, `body: empty array`)
	f(ParseError{Index: 1, Field: "a\"b\n", Msg: "unknown field"}, `event 1: "a\"b\n": unknown field`)
}

// TestParseAgreesWithEncodingJSON checks decoded values against encoding/json.
func TestParseAgreesWithEncodingJSON(t *testing.T) {
	body := []byte(`[{"id":"\u0041\"\\\/x\u00e9\ud834\udd1e","type":"a\u2028b","timestamp":"2026-12-03T10:00:00Z","data":{"k":[1,2]}},` +
		`{"type":"é","data":"x"}]`)
	evs, err := Parse(nil, body, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstEncodingJSON(t, body, evs)
}

func checkAgainstEncodingJSON(t *testing.T, body []byte, evs []Event) {
	t.Helper()
	var objs []map[string]json.RawMessage
	if bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("[")) {
		if err := json.Unmarshal(body, &objs); err != nil {
			t.Fatalf("encoding/json rejects %q: %v", body, err)
		}
	} else {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("encoding/json rejects %q: %v", body, err)
		}
		objs = append(objs, m)
	}
	if len(objs) != len(evs) {
		t.Fatalf("encoding/json sees %d events, Parse %d", len(objs), len(evs))
	}
	for i, m := range objs {
		str := func(name string, got []byte) {
			raw, ok := m[name]
			if !ok {
				if got != nil {
					t.Fatalf("event %d: %s = %q, absent for encoding/json", i, name, got)
				}
				return
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("event %d: %s: %v", i, name, err)
			}
			if s != string(got) {
				t.Fatalf("event %d: %s = %q, encoding/json %q", i, name, got, s)
			}
		}
		str("id", evs[i].ID)
		str("type", evs[i].Type)
		str("timestamp", evs[i].Timestamp)
		if !bytes.Equal(m["data"], evs[i].Data) {
			t.Fatalf("event %d: data %q, encoding/json %q", i, evs[i].Data, m["data"])
		}
	}
}

func TestPlain8(t *testing.T) {
	check := func(b [8]byte) {
		t.Helper()
		want := true
		for _, c := range b {
			want = want && plain[c]
		}
		if got := plain8(binary.LittleEndian.Uint64(b[:])); got != want {
			t.Fatalf("plain8(%q) = %v, want %v", b, got, want)
		}
	}
	for c := range 256 {
		for pos := range 8 {
			b := [8]byte{'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'}
			b[pos] = byte(c)
			check(b)
			b = [8]byte{0x7f, ' ', '!', '#', '[', ']', '~', '0'}
			b[pos] = byte(c)
			check(b)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	special := []byte{0, 0x1f, 0x20, 0x21, '"', '\\', 0x7f, 0x80, 0xa0, 0xff, 'a', 0x23, 0x5b, 0x5d}
	for range 200000 {
		var b [8]byte
		for i := range b {
			b[i] = special[rng.IntN(len(special))]
		}
		check(b)
	}
}
