package event

import (
	"strconv"
	"strings"
)

// sampleEvent is a typical producer event of about 300 bytes.
const sampleEvent = `{"id":"evt_01JD8X9Y2K3M4N5P6Q7R8S9T0V","type":"order.created","timestamp":"2026-12-03T10:00:00.123Z",` +
	`"data":{"order_id":"ord_8f14e45fceea167a","customer":{"id":"cus_42","email":"jane@example.com","vip":false},` +
	`"items":[{"sku":"SKU-1","qty":2,"price":19.99},{"sku":"SKU-2","qty":1,"price":5.5}],` +
	`"total":45.48,"currency":"EUR","paid":true,"note":null}}`

// sampleArray is a body of n sample events with distinct ids and no escapes.
func sampleArray(n int) []byte {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString(strings.Replace(sampleEvent, "T0V", "T0V"+strconv.Itoa(i), 1))
	}
	b.WriteByte(']')
	return []byte(b.String())
}
