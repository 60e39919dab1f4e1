package config

import (
	"go.yaml.in/yaml/v3"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// redacted replaces a secret in the output of Redacted.
const redacted = "REDACTED"

// Redacted returns a deep copy of c fit for logging: every non-empty secret
// (subscriber secret and previous_secrets, ingest.auth_tokens,
// ingest.signing_secret, admin.token) reads "REDACTED", and so do subscriber
// header values and URL query parameters whose names suggest a credential
// (containing auth, cookie, token, secret, key, password or sig), and a
// password (or a user alone) in a URL. c is not changed.
func (c Config) Redacted() Config {
	c.Ingest.AuthTokens = redactAll(c.Ingest.AuthTokens)
	c.Ingest.SigningSecret = redact(c.Ingest.SigningSecret)
	c.Ingest.AllowCIDRs = slices.Clone(c.Ingest.AllowCIDRs)
	c.Admin.Token = redact(c.Admin.Token)
	c.Subscribers = slices.Clone(c.Subscribers)
	for i := range c.Subscribers {
		s := &c.Subscribers[i]
		s.URL = RedactURL(s.URL)
		s.Secret = redact(s.Secret)
		s.PreviousSecrets = redactAll(s.PreviousSecrets)
		s.EventTypes = slices.Clone(s.EventTypes)
		s.Headers = maps.Clone(s.Headers)
		for name, v := range s.Headers {
			if isSensitiveName(name) {
				s.Headers[name] = redact(v)
			}
		}
	}
	return c
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// redactAll returns a copy of secrets with each non-empty one redacted.
func redactAll(secrets []string) []string {
	out := slices.Clone(secrets)
	for i, s := range out {
		out[i] = redact(s)
	}
	return out
}

// RedactURL hides the password of rawURL (or its user, when alone: often a
// token) and its credential-like query parameters. A URL that does not parse is returned as it is: Validate has
// rejected it.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	changed := false
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
		changed = true
	} else if u.User != nil && u.User.Username() != "" {
		u.User = url.User(redacted) // a user alone is often a token
		changed = true
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		// A pair it cannot read (a ';', a bad escape) may hold anything:
		// the whole query goes.
		u.RawQuery, changed, q = redacted, true, nil
	}
	for name := range q {
		if isSensitiveName(name) {
			q[name] = []string{redacted}
			u.RawQuery = q.Encode()
			changed = true
		}
	}
	if !changed {
		return rawURL
	}
	return u.String()
}

// isSensitiveName reports whether a header or parameter called name
// probably carries a credential.
func isSensitiveName(name string) bool {
	name = strings.ToLower(name)
	for _, w := range []string{"auth", "cookie", "token", "secret", "key", "password", "passwd", "sig"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// Fields returns the secret-free config keyed by its YAML names, for the
// startup log line.
func (c Config) Fields() map[string]any {
	out := map[string]any{}
	b, err := yaml.Marshal(c.Redacted())
	if err == nil {
		err = yaml.Unmarshal(b, &out)
	}
	if err != nil {
		return map[string]any{"error": "cannot show config: " + err.Error()}
	}
	return out
}
