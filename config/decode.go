package config

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder sets Config fields from a yaml.Node tree, recording a Problem with
// its YAML path for everything it cannot set instead of stopping at the
// first. Fields are found by their yaml tags.
type decoder struct {
	lookupEnv func(string) (string, bool)
	problems  []Problem
	merging   map[*yaml.Node]bool // mappings whose merge keys are being expanded
}

var (
	durationType   = reflect.TypeFor[time.Duration]()
	byteSizeType   = reflect.TypeFor[ByteSize]()
	subscriberType = reflect.TypeFor[Subscriber]()
)

func (d *decoder) addf(path, format string, args ...any) {
	if path == "" {
		path = rootPath
	}
	d.problems = append(d.problems, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// decodeField sets v from n, the value of a key: null leaves v as it is.
func (d *decoder) decodeField(n *yaml.Node, v reflect.Value, path string) {
	if n = resolve(n); isNull(n) {
		return
	}
	d.decodeValue(n, v, path)
}

// decodeItem sets v from n, an item of a list or mapping: null is a problem.
func (d *decoder) decodeItem(n *yaml.Node, v reflect.Value, path string) {
	if n = resolve(n); isNull(n) {
		d.addf(path, "%s, not null", typeMsg(v.Type()))
		return
	}
	d.decodeValue(n, v, path)
}

func (d *decoder) decodeValue(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	switch t {
	case durationType:
		if s, ok := d.scalar(n, t, path); ok {
			dur, err := time.ParseDuration(s)
			if err != nil {
				d.addf(path, "%s", typeMsg(t))
				return
			}
			v.SetInt(int64(dur))
		}
		return
	case byteSizeType:
		if s, ok := d.scalar(n, t, path); ok {
			b, err := ParseByteSize(s)
			if err != nil {
				d.addf(path, "%s", err)
				return
			}
			v.SetInt(int64(b))
		}
		return
	}

	switch t.Kind() {
	case reflect.String:
		if s, ok := d.scalar(n, t, path); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, t, path); ok {
			switch s {
			case "true", "True", "TRUE":
				v.SetBool(true)
			case "false", "False", "FALSE":
				v.SetBool(false)
			default:
				d.addf(path, "%s", typeMsg(t))
			}
		}
	case reflect.Int:
		if s, ok := d.scalar(n, t, path); ok {
			i, err := parseInt(s)
			switch {
			case err != nil && !isRangeErr(err):
				d.addf(path, "%s", typeMsg(t))
			case err != nil || v.OverflowInt(i):
				d.addf(path, "is out of range")
			default:
				v.SetInt(i)
			}
		}
	case reflect.Float64:
		if s, ok := d.scalar(n, t, path); ok {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.addf(path, "%s", typeMsg(t))
				return
			}
			v.SetFloat(f)
		}
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	default:
		panic(fmt.Sprintf("config: BUG: no decoder for %s at %s", t, path))
	}
}

// scalar returns the text of scalar n with ${ENV} expanded; false means a
// problem was recorded and v must be left as it is.
func (d *decoder) scalar(n *yaml.Node, t reflect.Type, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.addf(path, "%s", typeMsg(t))
		return "", false
	}
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		// A value starting with '!' is read as a tag, leaving the value
		// empty (a secret would silently be unset). The tag, perhaps the
		// secret, is not quoted.
		d.addf(path, "a value starting with '!' is read as a YAML tag; quote it")
		return "", false
	}
	return d.expand(n.Value, path)
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.addf(path, "%s", typeMsg(v.Type()))
		return
	}
	for _, kv := range d.pairs(n, path) {
		p := childPath(path, kv.key)
		i := fieldIndex(v.Type(), kv.key)
		if i < 0 {
			d.addf(p, "unknown key")
			continue
		}
		d.decodeField(kv.value, v.Field(i), p)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.addf(path, "%s", typeMsg(v.Type()))
		return
	}
	if len(n.Content) == 0 {
		v.SetZero() // [] and a left-out key read the same: nil
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		e := s.Index(i)
		if e.Type() == subscriberType {
			e.Set(reflect.ValueOf(Subscriber{Batch: DefaultBatch}))
		}
		// Items that fail to decode stay in place, so that later indexes
		// match the file.
		d.decodeItem(item, e, fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.addf(path, "%s", typeMsg(v.Type()))
		return
	}
	kvs := d.pairs(n, path)
	if len(kvs) == 0 {
		v.SetZero()
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(kvs))
	for _, kv := range kvs {
		e := reflect.New(v.Type().Elem()).Elem()
		d.decodeItem(kv.value, e, childPath(path, kv.key))
		m.SetMapIndex(reflect.ValueOf(kv.key).Convert(v.Type().Key()), e)
	}
	v.Set(m)
}

// pair is one key of a mapping and its value.
type pair struct {
	key   string
	value *yaml.Node
}

// pairs returns the entries of mapping n in document order, reporting
// duplicate and non-string keys. Merge keys (`<<: *anchor`) are expanded
// as YAML defines them: a key written in n wins over a merged one, and an
// earlier mapping in a merge list wins over a later one.
func (d *decoder) pairs(n *yaml.Node, path string) []pair {
	if d.merging[n] {
		d.addf(path, "merge key (<<) includes the mapping itself")
		return nil
	}
	d.merging[n] = true
	defer delete(d.merging, n)

	var kvs, merged []pair
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.addf(path, "mapping keys must be strings")
			continue
		}
		if isMerge(k) {
			merged = append(merged, d.mergePairs(val, path)...)
			continue
		}
		if seen[k.Value] {
			d.addf(childPath(path, k.Value), "duplicate key")
			continue
		}
		seen[k.Value] = true
		kvs = append(kvs, pair{k.Value, val})
	}
	for _, kv := range merged {
		if !seen[kv.key] {
			seen[kv.key] = true
			kvs = append(kvs, kv)
		}
	}
	return kvs
}

// mergePairs returns the entries that the value of a merge key brings in:
// one mapping, or a list of them with the earliest winning.
func (d *decoder) mergePairs(n *yaml.Node, path string) []pair {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		return d.pairs(n, path)
	case yaml.SequenceNode:
		var kvs []pair
		for _, item := range n.Content {
			if item = resolve(item); item.Kind != yaml.MappingNode {
				d.addf(childPath(path, "<<"), "must be a mapping or a list of mappings")
				continue
			}
			kvs = append(kvs, d.pairs(item, path)...)
		}
		return kvs
	}
	d.addf(childPath(path, "<<"), "must be a mapping or a list of mappings")
	return nil
}

// isSecretPath reports whether the key at path holds a token or a secret.
func isSecretPath(path string) bool {
	switch {
	case path == "admin.token", path == "ingest.signing_secret", strings.HasPrefix(path, "ingest.auth_tokens["):
		return true
	case strings.HasPrefix(path, "subscribers["):
		_, key, _ := strings.Cut(path, "].")
		return key == "secret" || strings.HasPrefix(key, "previous_secrets[")
	}
	return false
}

// expand replaces every ${NAME} in s by the value of environment variable
// NAME and every $${ by ${. Problems name the variable, never a value; a
// token or secret the variables leave empty is one.
func (d *decoder) expand(s, path string) (string, bool) {
	if !strings.Contains(s, "${") {
		return s, true
	}
	var b strings.Builder
	ok := true
	var names []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i]) // drop one $ of $${
			b.WriteString("{")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		s = s[i+2:]
		j := strings.IndexByte(s, '}')
		if j < 0 {
			d.addf(path, "has an unterminated ${ (write $${ for a literal ${)")
			return "", false
		}
		name := s[:j]
		s = s[j+1:]
		if !isEnvName(name) {
			d.addf(path, "has an invalid environment variable name in ${...} (write $${ for a literal ${)")
			ok = false
			continue
		}
		val, found := d.lookupEnv(name)
		if !found {
			d.addf(path, "environment variable %s is not set", name)
			ok = false
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		b.WriteString(val)
	}
	if ok && b.Len() == 0 && len(names) > 0 && isSecretPath(path) {
		// An empty token or secret switches a protection off: from a
		// variable, that is a mistake (leave the key out instead).
		d.addf(path, "environment variable %s is empty", strings.Join(names, ", "))
		return "", false
	}
	return b.String(), ok
}

// isEnvName reports whether s is a portable environment variable name.
func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// resolve follows alias n to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	// An anchor cannot sit on an alias, so one step is enough; the loop
	// only guards against a hand-built tree.
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && n.ShortTag() == "!!merge"
}

// parseInt parses a decimal integer, or a hexadecimal, octal or binary one
// with a 0x, 0o or 0b prefix. A leading 0 alone does not mean octal.
func parseInt(s string) (int64, error) {
	t := strings.TrimLeft(s, "+-")
	if len(t) > 2 && t[0] == '0' {
		switch t[1] | 0x20 {
		case 'x', 'o', 'b':
			return strconv.ParseInt(s, 0, 64)
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// typeMsg says what a value for a field of type t must look like.
func typeMsg(t reflect.Type) string {
	switch t {
	case durationType:
		return "must be a duration such as 30s"
	case byteSizeType:
		return errByteSize.Error()
	}
	switch t.Kind() {
	case reflect.String:
		return "must be a string"
	case reflect.Bool:
		return "must be a boolean (true or false)"
	case reflect.Int:
		return "must be an integer"
	case reflect.Float64:
		return "must be a number"
	case reflect.Slice:
		return "must be a list"
	default:
		return "must be a mapping"
	}
}

// fieldIndex returns the index of the field of struct type t whose yaml tag
// is key, or -1.
func fieldIndex(t reflect.Type, key string) int {
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == key {
			return i
		}
	}
	return -1
}

// childPath returns the path of key inside the mapping at path: a.b, or
// a["odd key"] for a key that is not a plain word.
func childPath(path, key string) string {
	if !isPlainKey(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func isPlainKey(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
