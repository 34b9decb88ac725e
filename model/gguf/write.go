package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Values for Encode. Each makes a Value of one GGUF type.

// StringValue is a string value.
func StringValue(s string) Value { return Value{Type: TypeString, v: s} }

// Uint32Value is a uint32 value.
func Uint32Value(x uint32) Value { return Value{Type: TypeUint32, v: int64(x)} }

// Int32Value is an int32 value.
func Int32Value(x int32) Value { return Value{Type: TypeInt32, v: int64(x)} }

// Uint64Value is a uint64 value.
func Uint64Value(x uint64) Value {
	if x > math.MaxInt64 {
		return Value{Type: TypeUint64, v: x}
	}
	return Value{Type: TypeUint64, v: int64(x)}
}

// Float32Value is a float32 value.
func Float32Value(x float32) Value { return Value{Type: TypeFloat32, v: float64(x)} }

// BoolValue is a bool value.
func BoolValue(b bool) Value { return Value{Type: TypeBool, v: b} }

// StringsValue is an array of strings.
func StringsValue(a []string) Value { return Value{Type: TypeArray, Elem: TypeString, v: a} }

// IntsValue is an array of integers of type elem (TypeInt32, TypeUint8, …).
func IntsValue(elem ValueType, a []int64) Value { return Value{Type: TypeArray, Elem: elem, v: a} }

// FloatsValue is an array of float32 (elem TypeFloat32) or float64 values.
func FloatsValue(elem ValueType, a []float64) Value { return Value{Type: TypeArray, Elem: elem, v: a} }

// ArraysValue is an array of arrays.
func ArraysValue(a []Value) Value { return Value{Type: TypeArray, Elem: TypeArray, v: a} }

// WriteTensor is a tensor for Encode: Data holds its bytes in Type's layout.
type WriteTensor struct {
	Name string
	Dims []int64 // ne, fastest-varying first
	Type Type
	Data []byte
}

// Encode returns a GGUF (version 3) file holding md and tensors, the data
// aligned to general.alignment when md sets it (as a uint32), else 32. It
// writes what it is given without checking it, so tests can make malformed
// files too; Parse is the judge.
func Encode(md []KV, tensors []WriteTensor) ([]byte, error) {
	align := int64(DefaultAlignment)
	for _, kv := range md {
		if kv.Key == "general.alignment" {
			if a, ok := kv.Value.v.(int64); ok && a > 0 {
				align = a
			}
		}
	}
	var b bytes.Buffer
	le := binary.LittleEndian
	u32 := func(x uint32) { b.Write(le.AppendUint32(nil, x)) }
	u64 := func(x uint64) { b.Write(le.AppendUint64(nil, x)) }
	str := func(s string) { u64(uint64(len(s))); b.WriteString(s) }
	b.WriteString(Magic)
	u32(3)
	u64(uint64(len(tensors)))
	u64(uint64(len(md)))
	for _, kv := range md {
		str(kv.Key)
		u32(uint32(kv.Value.Type))
		if err := encodeValue(&b, kv.Value.Type, kv.Value); err != nil {
			return nil, fmt.Errorf("gguf: metadata %s: %w", kv.Key, err)
		}
	}
	var off int64
	offsets := make([]int64, len(tensors))
	for i, t := range tensors {
		str(t.Name)
		u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			u64(uint64(d))
		}
		u32(uint32(t.Type))
		offsets[i] = off
		u64(uint64(off))
		off += (int64(len(t.Data)) + align - 1) / align * align
	}
	pad := func() {
		for int64(b.Len())%align != 0 {
			b.WriteByte(0)
		}
	}
	pad()
	for _, t := range tensors {
		b.Write(t.Data)
		pad()
	}
	return b.Bytes(), nil
}

func encodeValue(b *bytes.Buffer, t ValueType, v Value) error {
	le := binary.LittleEndian
	switch t {
	case TypeArray:
		b.Write(le.AppendUint32(nil, uint32(v.Elem)))
		b.Write(le.AppendUint64(nil, uint64(v.Len())))
		switch a := v.v.(type) {
		case []string:
			for _, s := range a {
				if err := encodeValue(b, TypeString, StringValue(s)); err != nil {
					return err
				}
			}
		case []int64:
			for _, x := range a {
				if err := encodeValue(b, v.Elem, Value{Type: v.Elem, v: x}); err != nil {
					return err
				}
			}
		case []float64:
			for _, x := range a {
				if err := encodeValue(b, v.Elem, Value{Type: v.Elem, v: x}); err != nil {
					return err
				}
			}
		case []bool:
			for _, x := range a {
				if err := encodeValue(b, v.Elem, Value{Type: v.Elem, v: x}); err != nil {
					return err
				}
			}
		case []Value:
			for _, x := range a {
				if err := encodeValue(b, TypeArray, x); err != nil {
					return err
				}
			}
		}
		return nil
	case TypeString:
		s, _ := v.v.(string)
		b.Write(le.AppendUint64(nil, uint64(len(s))))
		b.WriteString(s)
		return nil
	case TypeBool:
		x, _ := v.v.(bool)
		if x {
			b.WriteByte(1)
		} else {
			b.WriteByte(0)
		}
		return nil
	case TypeFloat32, TypeFloat64:
		x, ok := v.v.(float64)
		if !ok {
			return fmt.Errorf("%s value holds %T", t, v.v)
		}
		if t == TypeFloat32 {
			b.Write(le.AppendUint32(nil, math.Float32bits(float32(x))))
		} else {
			b.Write(le.AppendUint64(nil, math.Float64bits(x)))
		}
		return nil
	}
	if int(t) >= len(valueSize) {
		return fmt.Errorf("value type %d", uint32(t))
	}
	var u uint64
	switch x := v.v.(type) {
	case int64:
		u = uint64(x)
	case uint64:
		u = x
	default:
		return fmt.Errorf("%s value holds %T", t, v.v)
	}
	var buf [8]byte
	le.PutUint64(buf[:], u)
	b.Write(buf[:valueSize[t]])
	return nil
}
