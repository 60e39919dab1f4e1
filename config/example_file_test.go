package config

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const exampleFile = "../config.example.yaml"

func readExample(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestExampleFile(t *testing.T) {
	c, err := Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if ws := c.Warnings(); len(ws) > 0 {
		t.Fatalf("unexpected warnings: %v", ws)
	}

	// The example is the defaults plus what the local demo needs.
	want := Default()
	want.Delivery.AllowPrivateNetworks = true
	want.Subscribers = []Subscriber{{
		ID:     "demo",
		URL:    "http://127.0.0.1:9090/hooks",
		Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		Batch:  DefaultBatch,
	}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("example differs from the defaults beyond the demo\ngot  %+v\nwant %+v", c, want)
	}
}

// TestExampleFileDocumentsEveryKey checks that the example names every key
// of Config, in the order of the struct (which is the order of DESIGN §4).
func TestExampleFileDocumentsEveryKey(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal(readExample(t), &doc); err != nil {
		t.Fatal(err)
	}
	got := nodeKeys(doc.Content[0], "")
	want := typeKeys(reflect.TypeFor[Config](), "")
	if !slices.Equal(got, want) {
		t.Fatalf("example keys differ from Config\ngot  %q\nwant %q", got, want)
	}
}

// nodeKeys lists the key paths of a YAML tree in document order, with the
// items of a list of mappings as [].
func nodeKeys(n *yaml.Node, path string) []string {
	var out []string
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := childPath(path, n.Content[i].Value)
			out = append(out, p)
			out = append(out, nodeKeys(n.Content[i+1], p)...)
		}
	case yaml.SequenceNode:
		if len(n.Content) > 0 && n.Content[0].Kind == yaml.MappingNode {
			out = append(out, nodeKeys(n.Content[0], path+"[]")...)
		}
	}
	return out
}

// typeKeys lists the key paths of a Config type in field order, as
// nodeKeys does. Maps (headers) are leaves.
func typeKeys(t reflect.Type, path string) []string {
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			p := childPath(path, name)
			out = append(out, p)
			out = append(out, typeKeys(t.Field(i).Type, p)...)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			out = append(out, typeKeys(t.Elem(), path+"[]")...)
		}
	}
	return out
}

// TestExampleFileSecondSubscriber uncomments the example's second
// subscriber and checks that it is valid too.
func TestExampleFileSecondSubscriber(t *testing.T) {
	lines := strings.Split(string(readExample(t)), "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "  # A second subscriber") })
	if start < 0 {
		t.Fatal("example has no commented-out second subscriber")
	}
	n := 0
	for i := start + 1; i < len(lines); i++ {
		if rest, ok := strings.CutPrefix(lines[i], "  # "); ok {
			lines[i] = "  " + rest
			n++
		}
	}
	env := fakeEnv(map[string]string{
		"ORDERS_WEBHOOK_SECRET":          testSecret,
		"ORDERS_WEBHOOK_SECRET_PREVIOUS": testPrevSecret,
	})
	c, err := Parse([]byte(strings.Join(lines, "\n")), env)
	if err != nil {
		t.Fatalf("uncommented example (%d lines) is invalid: %v", n, err)
	}
	if len(c.Subscribers) != 2 {
		t.Fatalf("got %d subscribers, want 2", len(c.Subscribers))
	}
	s := c.Subscribers[1]
	if s.ID != "orders" || s.Secret != testSecret || !s.Ordered || len(s.PreviousSecrets) != 1 ||
		len(s.EventTypes) != 2 || s.Headers["X-Env"] != "prod" || s.Batch.MaxBytes != 4<<20 {
		t.Fatalf("unexpected second subscriber %+v", s)
	}
}
