package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type of a metadata value (enum gguf_type).
type ValueType uint32

// The metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64"}

// valueSize is the encoded size of a scalar of each type; a string's is its
// length prefix (the minimum it takes), an array's its element type and count.
var valueSize = [...]uint64{1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8}

// String is the type's name ("uint32", "array").
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("value type %d", uint32(t))
}

func (t ValueType) isInt() bool {
	switch t {
	case TypeUint8, TypeInt8, TypeUint16, TypeInt16, TypeUint32, TypeInt32, TypeUint64, TypeInt64:
		return true
	}
	return false
}

// Value is one metadata value. Scalars are kept widened: integers as int64
// (a uint64 above MaxInt64 is kept as its bits and reported as out of range
// by Int), floats as float64. Arrays keep their elements in the slice of the
// widened type: []int64, []float64, []bool, []string, or []Value for arrays
// of arrays.
type Value struct {
	Type ValueType
	// Elem is the element type of an array.
	Elem ValueType
	v    any
}

// KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// Len is the number of elements of an array value (0 for a scalar).
func (v Value) Len() int {
	switch a := v.v.(type) {
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	case []bool:
		return len(a)
	case []string:
		return len(a)
	case []Value:
		return len(a)
	}
	return 0
}

// Describe is the value's type as an error message says it: "uint32",
// "array of string".
func (v Value) Describe() string {
	if v.Type == TypeArray {
		return "array of " + v.Elem.String()
	}
	return v.Type.String()
}

// Any returns the value as a Go value: int64, uint64 (a uint64 above
// MaxInt64), float64, bool, string, or a slice of those (or []Value).
func (v Value) Any() any { return v.v }

// Metadata is a GGUF file's key/value metadata in file order, with lookups
// by key. Every accessor returns an error, never panics, when the key is
// missing or holds another type; the error names the key and both types.
type Metadata struct {
	source string // the file, for errors
	kvs    []KV
	index  map[string]int
}

// KVs returns the entries in file order.
func (m *Metadata) KVs() []KV { return m.kvs }

// Get returns the value of key.
func (m *Metadata) Get(key string) (Value, bool) {
	i, ok := m.index[key]
	if !ok {
		return Value{}, false
	}
	return m.kvs[i].Value, true
}

// Has reports whether key is present.
func (m *Metadata) Has(key string) bool {
	_, ok := m.index[key]
	return ok
}

func (m *Metadata) missing(key string) error {
	return fmt.Errorf("%w: %s: metadata has no %s", ErrMetadata, m.source, key)
}

func (m *Metadata) wrongType(key string, v Value, want string) error {
	return fmt.Errorf("%w: %s: metadata %s is a %s, want %s", ErrMetadata, m.source, key, v.Describe(), want)
}

// String returns the string value of key.
func (m *Metadata) String(key string) (string, error) {
	v, ok := m.Get(key)
	if !ok {
		return "", m.missing(key)
	}
	s, ok := v.v.(string)
	if !ok || v.Type != TypeString {
		return "", m.wrongType(key, v, "a string")
	}
	return s, nil
}

// Int returns the integer value of key (any integer type).
func (m *Metadata) Int(key string) (int64, error) {
	v, ok := m.Get(key)
	if !ok {
		return 0, m.missing(key)
	}
	switch x := v.v.(type) {
	case int64:
		return x, nil
	case uint64:
		return 0, fmt.Errorf("%w: %s: metadata %s = %d is out of range", ErrMetadata, m.source, key, x)
	}
	return 0, m.wrongType(key, v, "an integer")
}

// Float returns the numeric value of key (a float or an integer type).
func (m *Metadata) Float(key string) (float64, error) {
	v, ok := m.Get(key)
	if !ok {
		return 0, m.missing(key)
	}
	switch x := v.v.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	}
	return 0, m.wrongType(key, v, "a number")
}

// Bool returns the boolean value of key.
func (m *Metadata) Bool(key string) (bool, error) {
	v, ok := m.Get(key)
	if !ok {
		return false, m.missing(key)
	}
	b, ok := v.v.(bool)
	if !ok {
		return false, m.wrongType(key, v, "a bool")
	}
	return b, nil
}

// Strings returns the elements of an array of strings.
func (m *Metadata) Strings(key string) ([]string, error) {
	v, ok := m.Get(key)
	if !ok {
		return nil, m.missing(key)
	}
	a, ok := v.v.([]string)
	if !ok {
		return nil, m.wrongType(key, v, "an array of string")
	}
	return a, nil
}

// Ints returns the elements of an array of integers (any integer type).
func (m *Metadata) Ints(key string) ([]int64, error) {
	v, ok := m.Get(key)
	if !ok {
		return nil, m.missing(key)
	}
	a, ok := v.v.([]int64)
	if !ok || !v.Elem.isInt() {
		return nil, m.wrongType(key, v, "an array of integers")
	}
	for i, x := range a {
		if v.Elem == TypeUint64 && x < 0 {
			return nil, fmt.Errorf("%w: %s: metadata %s[%d] = %d is out of range", ErrMetadata, m.source, key, i, uint64(x))
		}
	}
	return a, nil
}

// Floats returns the elements of an array of numbers as float64.
func (m *Metadata) Floats(key string) ([]float64, error) {
	v, ok := m.Get(key)
	if !ok {
		return nil, m.missing(key)
	}
	switch a := v.v.(type) {
	case []float64:
		return a, nil
	case []int64:
		out := make([]float64, len(a))
		for i, x := range a {
			out[i] = float64(x)
		}
		return out, nil
	}
	return nil, m.wrongType(key, v, "an array of numbers")
}

// IntIn returns the integer value of key, which must lie in [lo, hi].
func (m *Metadata) IntIn(key string, lo, hi int64) (int, error) {
	x, err := m.Int(key)
	if err != nil {
		return 0, err
	}
	if x < lo || x > hi {
		return 0, fmt.Errorf("%w: %s: metadata %s = %d, want a value in [%d, %d]", ErrMetadata, m.source, key, x, lo, hi)
	}
	if x > math.MaxInt || x < math.MinInt {
		return 0, fmt.Errorf("%w: %s: metadata %s = %d is out of range", ErrMetadata, m.source, key, x)
	}
	return int(x), nil
}
