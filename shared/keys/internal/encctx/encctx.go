// Package encctx holds the canonical byte encoding of an encryption context,
// shared by the envelope (package keys) and the key wrappers that bind data
// keys to a context themselves (keys/local).
//
// The encoding is injective: two contexts encode to the same bytes exactly
// when they hold the same key/value pairs. A nil and an empty map are the
// same context. Layout (all integers are unsigned 32-bit big-endian):
//
//	count
//	then, for each entry in ascending byte order of its key:
//	    len(key) key len(value) value
//
// Because every string carries its length, contexts such as {"ab":"c"} and
// {"a":"bc"} cannot collide the way a plain concatenation would. Keys and
// values must be shorter than 4 GiB; context strings are short labels.
package encctx

import (
	"encoding/binary"
	"slices"
)

// Size returns the length of Encode(m).
func Size(m map[string]string) int {
	n := 4
	for k, v := range m {
		n += 8 + len(k) + len(v)
	}
	return n
}

// Append appends the canonical encoding of m to dst and returns the
// extended slice.
func Append(dst []byte, m map[string]string) []byte {
	var small [8]string // contexts are a few entries: no allocation
	names, size := small[:0], 4
	for k, v := range m {
		names = append(names, k)
		size += 8 + len(k) + len(v)
	}
	slices.Sort(names)
	dst = slices.Grow(dst, size)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(names)))
	for _, k := range names {
		v := m[k]
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(k)))
		dst = append(dst, k...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// Encode returns the canonical encoding of m.
func Encode(m map[string]string) []byte {
	return Append(nil, m)
}
