// Package tbread decodes TensorBoard event files for tests. It shares no
// code with tbevents (its own CRC-32C, varint and field decoding), so that
// a test reading back what tbevents wrote checks the format, not the
// writer against itself.
package tbread

import (
	"errors"
	"fmt"
	"math"
	"os"
)

// crc32c is a bitwise CRC-32C (reflected polynomial 0x82F63B78).
func crc32c(b []byte) uint32 {
	c := ^uint32(0)
	for _, x := range b {
		c ^= uint32(x)
		for k := 0; k < 8; k++ {
			if c&1 != 0 {
				c = c>>1 ^ 0x82F63B78
			} else {
				c >>= 1
			}
		}
	}
	return ^c
}

// Masked is TFRecord's masked CRC-32C.
func Masked(b []byte) uint32 {
	c := crc32c(b)
	return ((c >> 15) | (c << 17)) + 0xa282ead8
}

// CRC32C exposes the unmasked checksum (for a check-value test).
func CRC32C(b []byte) uint32 { return crc32c(b) }

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func varint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < 10 && i < len(b); i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad varint")
}

type field struct {
	num, wire int
	u         uint64
	bytes     []byte
}

func fields(b []byte) ([]field, error) {
	var out []field
	for len(b) > 0 {
		key, n, err := varint(b)
		if err != nil {
			return nil, err
		}
		b = b[n:]
		f := field{num: int(key >> 3), wire: int(key & 7)}
		switch f.wire {
		case 0:
			if f.u, n, err = varint(b); err != nil {
				return nil, err
			}
			b = b[n:]
		case 1:
			if len(b) < 8 {
				return nil, errors.New("short fixed64")
			}
			f.u, b = le64(b), b[8:]
		case 5:
			if len(b) < 4 {
				return nil, errors.New("short fixed32")
			}
			f.u, b = uint64(le32(b)), b[4:]
		case 2:
			l, n, err := varint(b)
			if err != nil || uint64(len(b)-n) < l {
				return nil, errors.New("bad length")
			}
			f.bytes, b = b[n:n+int(l)], b[n+int(l):]
		default:
			return nil, fmt.Errorf("wire type %d", f.wire)
		}
		out = append(out, f)
	}
	return out, nil
}

// Scalar is one decoded scalar summary.
type Scalar struct {
	Step     int64
	Tag      string
	Value    float32
	WallTime float64
}

// Read decodes an event file, checking both CRCs of every record. It
// returns the file version of the first event and the scalars in order.
func Read(path string) (version string, scalars []Scalar, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	for len(raw) > 0 {
		if len(raw) < 12 {
			return "", nil, errors.New("truncated record header")
		}
		n := le64(raw)
		if Masked(raw[:8]) != le32(raw[8:12]) {
			return "", nil, errors.New("length CRC mismatch")
		}
		if uint64(len(raw)) < 16+n {
			return "", nil, errors.New("truncated record")
		}
		data := raw[12 : 12+n]
		if Masked(data) != le32(raw[12+n:16+n]) {
			return "", nil, errors.New("data CRC mismatch")
		}
		raw = raw[16+n:]
		fs, err := fields(data)
		if err != nil {
			return "", nil, err
		}
		var s Scalar
		for _, f := range fs {
			switch f.num {
			case 1:
				s.WallTime = math.Float64frombits(f.u)
			case 2:
				s.Step = int64(f.u)
			case 3:
				version = string(f.bytes)
			case 5:
				vals, err := fields(f.bytes)
				if err != nil {
					return "", nil, err
				}
				for _, v := range vals {
					vf, err := fields(v.bytes)
					if err != nil {
						return "", nil, err
					}
					for _, x := range vf {
						switch {
						case x.num == 1:
							s.Tag = string(x.bytes)
						case x.num == 2 && x.wire == 5:
							s.Value = math.Float32frombits(uint32(x.u))
						}
					}
				}
				scalars = append(scalars, s)
			}
		}
	}
	return version, scalars, nil
}
