package event

import "strconv"

// Delivery is a delivered batch body as ParseDelivery reads it:
//
//	{"batch":true,"batch_id":"...","subscriber":"...","count":2,"events":[...]}
//
// Its slices alias the body (or a fresh allocation for a string with
// escapes), like Event's.
type Delivery struct {
	Batch      bool   // the "batch" member is true
	BatchID    []byte // nil when absent
	Subscriber []byte // nil when absent
	Count      int    // -1 when absent
	Events     []Event
}

// ParseDelivery parses a delivered batch body in one pass. The body must be
// strict JSON (the rules of Parse) holding one object; "batch" must be a
// boolean, "batch_id" and "subscriber" strings, "count" a non-negative
// integer and "events" a non-empty array of event objects, each following
// Parse's rules except the length and character limits of "id" and "type"
// (a receiver takes what was stored). Other members are skipped (nesting at
// most MaxDataDepth levels), so a receiver keeps working when the body gains
// one. Whether required members are present is the caller's
// to check.
func ParseDelivery(body []byte, events []Event) (Delivery, error) {
	d := Delivery{Count: -1, Events: events}
	p := parser{b: body, delivered: true}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		if p.i < len(p.b) && valueStart[p.b[p.i]] {
			return d, &ParseError{Index: -1, Msg: "must be a JSON object"}
		}
		return d, p.unexpected()
	}
	p.i++
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
	} else {
		for {
			key, esc, err := p.member()
			if err != nil {
				return d, err
			}
			if esc {
				key = appendUnescaped(nil, key)
			}
			if err := p.deliveryMember(&d, key); err != nil {
				return d, err
			}
			more, err := p.next('}')
			if err != nil {
				return d, err
			}
			if !more {
				break
			}
		}
	}
	p.ws()
	if p.i != len(p.b) {
		return d, p.syntaxErr("unexpected data after the top-level value")
	}
	return d, nil
}

// deliveryMember parses the value at p.i of the member named key into d.
func (p *parser) deliveryMember(d *Delivery, key []byte) error {
	switch string(key) {
	case "batch":
		switch {
		case p.i < len(p.b) && p.b[p.i] == 't':
			d.Batch = true
			return p.literal("true")
		case p.i < len(p.b) && p.b[p.i] == 'f':
			d.Batch = false
			return p.literal("false")
		}
		return &ParseError{Index: -1, Field: "batch", Msg: "must be a boolean"}
	case "batch_id", "subscriber":
		name, dst := "subscriber", &d.Subscriber
		if string(key) == "batch_id" {
			name, dst = "batch_id", &d.BatchID
		}
		v, err := p.strValue(-1, name, "must be a string")
		*dst = v
		return err
	case "count":
		start := p.i
		if err := p.number(); err != nil {
			return err
		}
		n, err := strconv.Atoi(string(p.b[start:p.i])) // no allocation: the string does not escape
		if err != nil || n < 0 {
			return &ParseError{Index: -1, Field: "count", Msg: "must be a non-negative integer"}
		}
		d.Count = n
		return nil
	case "events":
		if p.i >= len(p.b) || p.b[p.i] != '[' {
			return &ParseError{Index: -1, Field: "events", Msg: "must be a non-empty array of event objects"}
		}
		var err error
		d.Events, err = p.array(d.Events[:0], 0)
		return err
	}
	return p.value(-1, string(key))
}
