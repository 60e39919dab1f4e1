package relay

// matchType reports whether typ matches glob pattern p, where '*' matches any
// run of characters (dots included) and '?' any one byte.
func matchType(p string, typ []byte) bool {
	// Iterative wildcard match with one backtrack point: linear in practice,
	// never exponential.
	pi, ti := 0, 0
	star, mark := -1, 0
	for ti < len(typ) {
		switch {
		case pi < len(p) && p[pi] == '*': // a wildcard, even against a literal '*'
			star, mark = pi, ti
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == typ[ti]):
			pi++
			ti++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// matches reports whether the subscriber takes events of type typ; no
// patterns means every type.
func (s *subscriber) matches(typ []byte) bool {
	if len(s.cfg.EventTypes) == 0 {
		return true
	}
	for _, p := range s.cfg.EventTypes {
		if matchType(p, typ) {
			return true
		}
	}
	return false
}
