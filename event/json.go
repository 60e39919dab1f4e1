package event

import "unicode/utf8"

// AppendJSON appends the event as it appears in a delivered batch:
// {"id":"...","type":"...","timestamp":"...","data":<Data byte for byte>}
//
// Data is written as stored, so it must be a JSON value (Parse and
// DecodeRecord ensure that); an empty Data is written as null.
func AppendJSON(dst []byte, r *Record) []byte {
	dst = append(dst, `{"id":`...)
	dst = AppendString(dst, r.ID)
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, r.Type)
	dst = append(dst, `,"timestamp":`...)
	dst = AppendString(dst, r.Timestamp)
	dst = append(dst, `,"data":`...)
	if len(r.Data) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, r.Data...)
	}
	return append(dst, '}')
}

// AppendString appends s as a JSON string literal (quotes, escapes for " \ and control characters; valid UTF-8 passed through).
//
// Bytes that are not valid UTF-8 are written as \ufffd, so the result is
// always valid UTF-8 and valid JSON.
func AppendString(dst []byte, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plain[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default: // other control characters
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"
