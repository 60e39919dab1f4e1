package config

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

var (
	errByteSize         = errors.New("must be a byte size such as 1048576, 64KiB, 1MiB or 10GiB")
	errByteSizeNegative = errors.New("must not be negative")
	errByteSizeTooLarge = errors.New("is too large")
)

// byteUnits maps a lowercase unit suffix to its size in bytes.
var byteUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseByteSize parses a size written as a whole number of bytes ("512"),
// optionally followed by a unit: KiB, MiB, GiB, TiB (powers of two) or KB, MB,
// GB, TB (powers of ten), in any letter case, with or without a space. It
// rejects negative and out-of-range sizes. Errors do not repeat s.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	mult, ok := byteUnits[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok {
		return 0, errByteSize
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	switch {
	case isRangeErr(err) && !strings.HasPrefix(s, "-"):
		return 0, errByteSizeTooLarge
	case isRangeErr(err):
		return 0, errByteSizeNegative
	case err != nil:
		return 0, errByteSize
	case n < 0:
		return 0, errByteSizeNegative
	case n > math.MaxInt64/mult:
		return 0, errByteSizeTooLarge
	}
	return ByteSize(n * mult), nil
}

// String returns b in the largest binary unit that divides it exactly, such
// as "64KiB" or "1MiB", or as a plain number of bytes; ParseByteSize reads
// it back.
func (b ByteSize) String() string {
	units := [...]struct {
		name string
		size ByteSize
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if b != 0 && b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}
