package event

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Parse appends the events of body to dst. body is one JSON event object or a non-empty JSON array of them.
//
// The whole body must be strict RFC 8259 JSON: strings are valid UTF-8 with
// no raw control characters and no unpaired surrogate escapes, and nothing
// but whitespace follows the top-level value. An event has a required "type"
// (a string of 1-128 characters) and "data" (any JSON value nesting at most
// MaxDataDepth levels), an optional "id" (a string of 1-256 bytes without
// control characters) and an optional "timestamp" (an RFC 3339 string);
// any other key, a repeated key or a value of the wrong type is an error.
//
// Parse is all-or-nothing: on error it returns dst as it came, together with
// a *ParseError, or ErrTooManyEvents as soon as an element beyond maxEvents
// begins (maxEvents <= 0 means no limit). It allocates nothing when dst has
// room, no id, type or timestamp is written with escapes and timestamps have
// two-digit fields (every RFC 3339 timestamp does).
func Parse(dst []Event, body []byte, maxEvents int) ([]Event, error) {
	n0 := len(dst)
	p := parser{b: body}
	dst, err := p.body(dst, maxEvents)
	if err != nil {
		clear(dst[n0:]) // drop references into body held by the discarded events
		return dst[:n0], err
	}
	return dst, nil
}

// parser is a cursor over a body. Methods leave p.i just past what they
// consumed; on error p.i is the offset of the problem.
type parser struct {
	b []byte
	i int
	// delivered relaxes the checks of id and type lengths and characters:
	// a receiver takes the events a sender stored, whatever rules it had.
	delivered bool
}

func (p *parser) body(dst []Event, maxEvents int) ([]Event, error) {
	p.ws()
	if p.i >= len(p.b) {
		return dst, p.unexpected()
	}
	switch c := p.b[p.i]; {
	case c == '{':
		dst = append(dst, Event{})
		if err := p.event(&dst[len(dst)-1], 0); err != nil {
			return dst, err
		}
	case c == '[':
		var err error
		if dst, err = p.array(dst, maxEvents); err != nil {
			return dst, err
		}
	case valueStart[c]:
		return dst, &ParseError{Index: -1, Msg: "must be a JSON object or a non-empty array of objects"}
	default:
		return dst, p.unexpected()
	}
	p.ws()
	if p.i != len(p.b) {
		return dst, p.syntaxErr("unexpected data after the top-level value")
	}
	return dst, nil
}

// array parses the non-empty array of event objects at p.i ('[').
func (p *parser) array(dst []Event, maxEvents int) ([]Event, error) {
	p.i++
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		return dst, &ParseError{Index: -1, Msg: "empty array"}
	}
	for idx := 0; ; idx++ {
		if maxEvents > 0 && idx >= maxEvents {
			return dst, ErrTooManyEvents
		}
		if p.i >= len(p.b) {
			return dst, p.unexpected()
		}
		if c := p.b[p.i]; c != '{' {
			if !valueStart[c] {
				return dst, p.unexpected()
			}
			return dst, &ParseError{Index: idx, Msg: "must be a JSON object"}
		}
		dst = append(dst, Event{})
		if err := p.event(&dst[len(dst)-1], idx); err != nil {
			return dst, err
		}
		if more, err := p.next(']'); err != nil || !more {
			return dst, err
		}
	}
}

// Field bits, for duplicate and required-field checks.
const (
	fieldID = 1 << iota
	fieldType
	fieldTimestamp
	fieldData
)

const (
	msgID        = "must be a string of 1-256 bytes"
	msgIDControl = "must not contain control characters"
	msgType      = "must be a string of 1-128 characters"
	msgTimestamp = "must be an RFC 3339 timestamp string"
	msgMissing   = "is required"
	msgDepth     = "nests deeper than 128 levels"
)

// event parses the object at p.i into ev.
func (p *parser) event(ev *Event, idx int) error {
	p.i++ // '{'
	p.ws()
	var seen uint
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
	} else {
		for {
			key, esc, err := p.member()
			if err != nil {
				return err
			}
			f := fieldOf(key, esc)
			if f == 0 {
				return &ParseError{Index: idx, Field: fieldName(key, esc), Msg: "unknown field"}
			}
			if seen&f != 0 {
				return &ParseError{Index: idx, Field: fieldName(key, esc), Msg: "duplicate field"}
			}
			seen |= f
			switch f {
			case fieldID:
				v, err := p.strValue(idx, "id", msgID)
				if err != nil {
					return err
				}
				if p.delivered {
					// Any string: checked where the event was accepted.
				} else if len(v) == 0 || len(v) > MaxIDBytes {
					return &ParseError{Index: idx, Field: "id", Msg: msgID}
				} else if hasControl(v) {
					return &ParseError{Index: idx, Field: "id", Msg: msgIDControl}
				}
				ev.ID = v
			case fieldType:
				v, err := p.strValue(idx, "type", msgType)
				if err != nil {
					return err
				}
				if !p.delivered && (len(v) == 0 || len(v) > MaxTypeChars && utf8.RuneCount(v) > MaxTypeChars) {
					return &ParseError{Index: idx, Field: "type", Msg: msgType}
				}
				ev.Type = v
			case fieldTimestamp:
				v, err := p.strValue(idx, "timestamp", msgTimestamp)
				if err != nil {
					return err
				}
				if !validTimestamp(v) {
					return &ParseError{Index: idx, Field: "timestamp", Msg: msgTimestamp}
				}
				ev.Timestamp = v
			case fieldData:
				start := p.i
				if err := p.value(idx, "data"); err != nil {
					return err
				}
				ev.Data = p.b[start:p.i:p.i]
			}
			more, err := p.next('}')
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
	}
	if seen&fieldType == 0 {
		return &ParseError{Index: idx, Field: "type", Msg: msgMissing}
	}
	if seen&fieldData == 0 {
		return &ParseError{Index: idx, Field: "data", Msg: msgMissing}
	}
	return nil
}

// fieldOf maps a key (the bytes between its quotes) to its field bit, 0 when unknown.
func fieldOf(key []byte, esc bool) uint {
	if esc {
		// An escaped key is rare; decode it into a buffer on the stack.
		// Keys longer than any field name cannot match.
		if len(key) > 6*len("timestamp") {
			return 0
		}
		var buf [6 * len("timestamp")]byte
		key = appendUnescaped(buf[:0], key)
	}
	switch string(key) {
	case "id":
		return fieldID
	case "type":
		return fieldType
	case "timestamp":
		return fieldTimestamp
	case "data":
		return fieldData
	}
	return 0
}

// maxFieldName bounds how much of an unknown key an error echoes back.
const maxFieldName = 64

// fieldName is the decoded key for an error message, cut to maxFieldName bytes.
func fieldName(key []byte, esc bool) string {
	if esc {
		key = appendUnescaped(nil, key)
	}
	if len(key) <= maxFieldName {
		return string(key)
	}
	n := maxFieldName
	for n > 0 && !utf8.RuneStart(key[n]) {
		n--
	}
	return string(key[:n]) + "..."
}

// strValue parses a string value for field name and returns its decoded
// bytes: a subslice of the body, or a fresh copy when it had escapes.
func (p *parser) strValue(idx int, name, msg string) ([]byte, error) {
	if p.i >= len(p.b) || !startsValue(p.b[p.i]) {
		return nil, p.unexpected() // no value at all: the JSON is cut or broken
	}
	if p.b[p.i] != '"' {
		return nil, &ParseError{Index: idx, Field: name, Msg: msg}
	}
	start := p.i + 1
	esc, err := p.str()
	if err != nil {
		return nil, err
	}
	raw := p.b[start : p.i-1 : p.i-1]
	if !esc {
		return raw, nil
	}
	return appendUnescaped(make([]byte, 0, len(raw)), raw), nil
}

// startsValue reports whether a JSON value can begin with c.
func startsValue(c byte) bool {
	switch c {
	case '"', '{', '[', '-', 't', 'f', 'n':
		return true
	}
	return '0' <= c && c <= '9'
}

// CheckID says what is wrong with id as an event id, or "" when nothing:
// the rules Parse applies to "id", for an id that arrives another way (the
// Idempotency-Key header).
func CheckID(id []byte) string {
	switch {
	case len(id) == 0 || len(id) > MaxIDBytes:
		return "must be 1-256 bytes"
	case !utf8.Valid(id):
		return "must be valid UTF-8"
	case hasControl(id):
		return msgIDControl
	}
	return ""
}

// hasControl reports whether v (valid UTF-8) holds a C0 or C1 control
// character or DEL.
func hasControl(v []byte) bool {
	for i, c := range v {
		if c < 0x20 || c == 0x7f || c == 0xc2 && i+1 < len(v) && v[i+1] < 0xa0 {
			return true
		}
	}
	return false
}

// validTimestamp reports whether time.Parse(time.RFC3339Nano, v) succeeds.
func validTimestamp(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	if rfc3339(v) {
		return true
	}
	// Forms off the common path (one-digit hours, say) go to time.Parse. The
	// string only lives for the call: the parsed time is discarded and so is
	// the error, the only thing that could keep it.
	_, err := time.Parse(time.RFC3339Nano, unsafe.String(&v[0], len(v)))
	return err == nil
}

// rfc3339 accepts what time.Parse's RFC 3339 fast path accepts, without
// building a time (and a time.Location for a numeric offset). When it says
// no, time.Parse may still say yes.
func rfc3339(s []byte) bool {
	num := func(b []byte, lo, hi int) (int, bool) {
		x := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			x = x*10 + int(c-'0')
		}
		return x, lo <= x && x <= hi
	}
	if len(s) < len("2006-01-02T15:04:05") ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return false
	}
	year, ok1 := num(s[0:4], 0, 9999)
	month, ok2 := num(s[5:7], 1, 12)
	day, ok3 := num(s[8:10], 1, 31)
	_, ok4 := num(s[11:13], 0, 23)
	_, ok5 := num(s[14:16], 0, 59)
	_, ok6 := num(s[17:19], 0, 59)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || day > daysIn(month, year) {
		return false
	}
	s = s[19:]
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		n := digits(s, 2)
		s = s[n:]
	}
	if len(s) == 1 && s[0] == 'Z' {
		return true
	}
	if len(s) != len("-07:00") || s[0] != '+' && s[0] != '-' || s[3] != ':' {
		return false
	}
	_, ok1 = num(s[1:3], 0, 23)
	_, ok2 = num(s[4:6], 0, 59)
	return ok1 && ok2
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// value checks the JSON value at p.i (the data of event idx) and moves past
// it. It walks nested arrays and objects with a bit stack, never recursing,
// and rejects nesting deeper than MaxDataDepth.
func (p *parser) value(idx int, field string) error {
	var stack [(MaxDataDepth + 63) / 64]uint64 // bit d-1 set: level d is an object
	depth := 0
	for {
		// A value is expected at p.i.
		if p.i >= len(p.b) {
			return p.unexpected()
		}
		switch c := p.b[p.i]; c {
		case '{', '[':
			if depth == MaxDataDepth {
				return &ParseError{Index: idx, Field: field, Msg: msgDepth}
			}
			p.i++
			p.ws()
			if c == '{' {
				stack[depth/64] |= 1 << (depth % 64)
			} else {
				stack[depth/64] &^= 1 << (depth % 64)
			}
			depth++
			if p.i < len(p.b) && p.b[p.i] == c+2 { // '}' is '{'+2, ']' is '['+2
				p.i++
				depth--
				break
			}
			if c == '{' {
				if _, _, err := p.member(); err != nil {
					return err
				}
			}
			continue
		case '"':
			if _, err := p.str(); err != nil {
				return err
			}
		case 't':
			if err := p.literal("true"); err != nil {
				return err
			}
		case 'f':
			if err := p.literal("false"); err != nil {
				return err
			}
		case 'n':
			if err := p.literal("null"); err != nil {
				return err
			}
		default:
			if err := p.number(); err != nil {
				return err
			}
		}
		// A value ended: close containers until one continues with ','.
		for {
			if depth == 0 {
				return nil
			}
			p.ws()
			if p.i >= len(p.b) {
				return p.unexpected()
			}
			obj := stack[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			c := p.b[p.i]
			if c == ',' {
				p.i++
				p.ws()
				if obj {
					if _, _, err := p.member(); err != nil {
						return err
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				p.i++
				depth--
				continue
			}
			return p.unexpected()
		}
	}
}

// member reads `"key" :` of an object member, leaving p.i at its value. key
// is the bytes between the quotes, with escapes when esc.
func (p *parser) member() (key []byte, esc bool, err error) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false, p.unexpected()
	}
	start := p.i + 1
	if esc, err = p.str(); err != nil {
		return nil, false, err
	}
	key = p.b[start : p.i-1]
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != ':' {
		return nil, false, p.unexpected()
	}
	p.i++
	p.ws()
	return key, esc, nil
}

// next moves past what follows an object member or array element: a ','
// (more follow: true) or the closing byte (false); anything else is an
// error.
func (p *parser) next(closing byte) (bool, error) {
	p.ws()
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case ',':
			p.i++
			p.ws()
			return true, nil
		case closing:
			p.i++
			return false, nil
		}
	}
	return false, p.unexpected()
}

// str checks the string literal starting at the quote at p.i and moves past
// its closing quote. It reports whether the literal has escapes.
func (p *parser) str() (esc bool, err error) {
	b := p.b
	i := p.i + 1
	for {
		// Fast path: a run of plain ASCII, eight bytes at a time.
		for i+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			p.i = i
			return esc, p.syntaxErr("unexpected end of input in string")
		}
		switch c := b[i]; {
		case c == '"':
			p.i = i + 1
			return esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				p.i = i + 1
				return esc, p.syntaxErr("unexpected end of input in string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(b, i+2)
				if !ok {
					p.i = i
					return esc, p.syntaxErr(`invalid \u escape`)
				}
				switch {
				case r >= 0xd800 && r < 0xdc00:
					lo, ok := rune(0), false
					if i+11 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
						lo, ok = hex4(b, i+8)
					}
					if !ok || lo < 0xdc00 || lo >= 0xe000 {
						p.i = i
						return esc, p.syntaxErr(`unpaired surrogate in \u escape`)
					}
					i += 12
				case r >= 0xdc00 && r < 0xe000:
					p.i = i
					return esc, p.syntaxErr(`unpaired surrogate in \u escape`)
				default:
					i += 6
				}
			default:
				p.i = i
				return esc, p.syntaxErr("invalid escape in string")
			}
		case c < 0x20:
			p.i = i
			return esc, p.syntaxErr("control character in string")
		default: // c >= 0x80
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				p.i = i
				return esc, p.syntaxErr("invalid UTF-8 in string")
			}
			i += size
		}
	}
}

// plain8 reports whether all eight bytes packed in x are plain.
func plain8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ ones*'"'
	backslash := x ^ ones*'\\'
	// A byte's high bit ends up set when it is below 0x20, is zero after the
	// xor (a quote or a backslash) or had its own high bit set (not ASCII).
	// Borrows can set false bits only above a byte already found.
	return ((x-ones*0x20)|(quote-ones)|(backslash-ones)|x)&highs == 0
}

// hex4 decodes the four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendUnescaped appends the decoded form of raw, the inside of a string
// literal that str has accepted, to dst.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		j := i
		for j < len(raw) && raw[j] != '\\' {
			j++
		}
		dst = append(dst, raw[i:j]...)
		if j == len(raw) {
			break
		}
		switch c := raw[j+1]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(raw, j+2)
			if r >= 0xd800 && r < 0xdc00 {
				lo, _ := hex4(raw, j+8)
				r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
				j += 6
			}
			dst = utf8.AppendRune(dst, r)
			j += 4
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
		i = j + 2
	}
	return dst
}

// number checks a number at p.i against the RFC 8259 grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and moves past it.
func (p *parser) number() error {
	b, i := p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		p.i = i
		return p.unexpected()
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			p.i = i
			return p.syntaxErr("invalid number: digit expected after '.'")
		}
		i = digits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			p.i = i
			return p.syntaxErr("invalid number: digit expected in exponent")
		}
		i = digits(b, i)
	}
	p.i = i
	return nil
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// literal checks that lit (true, false or null) is at p.i and moves past it.
func (p *parser) literal(lit string) error {
	if len(p.b)-p.i < len(lit) || string(p.b[p.i:p.i+len(lit)]) != lit {
		return p.syntaxErr("invalid literal, expected " + lit)
	}
	p.i += len(lit)
	return nil
}

// ws skips JSON whitespace.
func (p *parser) ws() {
	b, i := p.b, p.i
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	p.i = i
}

func (p *parser) syntaxErr(msg string) *ParseError {
	return &ParseError{Index: -1, Msg: fmt.Sprintf("invalid JSON at offset %d: %s", p.i, msg)}
}

// unexpected reports the byte at p.i, or the end of input, as out of place.
func (p *parser) unexpected() *ParseError {
	if p.i >= len(p.b) {
		return p.syntaxErr("unexpected end of input")
	}
	c := p.b[p.i]
	if c >= 0x20 && c < 0x7f {
		return p.syntaxErr(fmt.Sprintf("unexpected character %q", rune(c)))
	}
	return p.syntaxErr(fmt.Sprintf("unexpected byte 0x%02x", c))
}

// plain marks bytes that stand for themselves inside a string literal:
// printable ASCII other than '"' and '\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// valueStart marks bytes that can begin a JSON value.
var valueStart = func() (t [256]bool) {
	for _, c := range []byte(`{["-0123456789tfn`) {
		t[c] = true
	}
	return t
}()
