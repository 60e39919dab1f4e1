package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// rootPath names the document itself in a Problem.
const rootPath = "(root)"

// Problem is one thing wrong with a configuration, at its YAML path, such as
// `delivery.retry.max_backoff`, `subscribers[2].url` or `ingest.auth_tokens[0]`.
// Msg never contains the value of a secret or token.
type Problem struct {
	Path string
	Msg  string
}

// String returns "path: msg".
func (p Problem) String() string {
	return p.Path + ": " + p.Msg
}

// Error is an invalid configuration: every problem found, in document order
// for problems found while decoding, then in the order of Validate.
type Error struct {
	Problems []Problem
	// Unparsed: the document could not be read as YAML at all, so the
	// Config returned with the error is Default(), not a decoding of it.
	Unparsed bool
}

// Error returns one problem per line.
func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return "invalid configuration"
	}
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Load reads the YAML file at path and returns its configuration as Parse
// does, expanding ${ENV_NAME} from the process environment. Errors name the
// file; an invalid file gives an error that wraps *Error (use errors.As).
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("cannot read config: %w", err)
	}
	c, err := Parse(data, os.LookupEnv)
	if err != nil {
		return c, fmt.Errorf("invalid config %q:\n%w", path, err)
	}
	return c, nil
}

// Parse returns the configuration described by the YAML document data: the
// keys it sets on top of Default(), with ${ENV_NAME} in every scalar replaced
// by the value lookupEnv gives (a nil lookupEnv knows no variables).
//
// Parse checks everything at once: YAML syntax, unknown and duplicate keys,
// value types, unset variables and Validate. If anything is wrong the error
// is an *Error listing every problem; the Config returned with it is the best
// effort at decoding, good for Warnings but not for running.
//
// An empty document, or one holding only comments or null, gives Default().
// A key whose value is null keeps its default. A subscriber starts from zero
// values except for its batch block, whose left-out keys take DefaultBatch.
// `$${` stands for a literal `${`.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (Config, error) {
	c := Default()
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	d := &decoder{lookupEnv: lookupEnv, merging: map[*yaml.Node]bool{}}

	root, problems := parseDocument(data)
	d.problems = problems
	if root != nil {
		d.decodeField(root, reflect.ValueOf(&c).Elem(), "")
	}

	problems = d.problems
	for _, p := range c.Validate() {
		if !covered(problems, p.Path) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return c, &Error{Problems: problems, Unparsed: root == nil && len(d.problems) > 0}
	}
	return c, nil
}

// parseDocument returns the content node of the single YAML document in
// data, nil when the document is empty, and any syntax problems.
func parseDocument(data []byte) (*yaml.Node, []Problem) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, []Problem{{rootPath, syntaxMsg(err)}}
	}
	var problems []Problem
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		problems = append(problems, Problem{rootPath, "only one YAML document is allowed"})
	case !errors.Is(err, io.EOF):
		problems = append(problems, Problem{rootPath, syntaxMsg(err)})
	}
	if len(doc.Content) == 0 {
		return nil, problems
	}
	return doc.Content[0], problems
}

// syntaxMsg turns a YAML parser error into a problem message.
func syntaxMsg(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if strings.HasPrefix(msg, "unknown anchor ") {
		// The anchor's name is the rest of a value that began with '*',
		// perhaps a secret: not quoted.
		return "invalid YAML: a value starting with '*' is read as an alias; quote it"
	}
	return "invalid YAML: " + msg
}

// covered reports whether a problem at path is already explained by one of
// problems at the same path or above it, as when a value of the wrong type
// leaves a field empty and Validate would complain about it again.
func covered(problems []Problem, path string) bool {
	for _, p := range problems {
		if path == p.Path {
			return true
		}
		if strings.HasPrefix(path, p.Path) {
			switch path[len(p.Path)] {
			case '.', '[':
				return true
			}
		}
	}
	return false
}
