package config

import (
	"errors"
	"testing"
)

// FuzzParse checks that Parse never panics, that it fails only with an
// *Error whose problems all have a path and a message, and that what it
// accepts is valid.
func FuzzParse(f *testing.F) {
	f.Add(readExample(f))
	f.Add([]byte(fullConfig))
	f.Add([]byte(""))
	f.Add([]byte("# comment only\n"))
	f.Add([]byte("listen: [\n"))
	f.Add([]byte("a: &a [*a]\nb: &m {<<: *m}\n"))
	f.Add([]byte("subscribers:\n  - &s {id: a, url: 'http://a.example', secret: '${SECRET}'}\n  - {<<: *s, id: b, batch: {max_bytes: 64KiB}}\n"))
	f.Add([]byte("delivery: {concurrency: ${N}, timeout: ${T}, retry: {jitter: .nan}}\ningest: {max_body_bytes: -1, auth_tokens: [~]}\n"))
	f.Add([]byte("---\nlisten: :1\n---\n"))

	env := fakeEnv(map[string]string{"SECRET": testSecret, "N": "8", "T": "2s", "EMPTY": ""})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, env)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("Parse error is not an *Error with problems: %#v", err)
			}
			for _, p := range e.Problems {
				if p.Path == "" || p.Msg == "" {
					t.Fatalf("problem without path or message: %#v", p)
				}
			}
			_ = c.Warnings()
			return
		}
		if ps := c.Validate(); len(ps) > 0 {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", ps)
		}
		_ = c.Warnings()
		_ = c.Redacted()
	})
}
