package textpb

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// FieldReader interprets the fields of one message, reporting errors with
// positions and rejecting repeated singular fields.
type FieldReader struct {
	p    *Parser
	ctx  string // e.g. `feature "user_id"`, for messages
	seen map[string]bool
}

// NewFieldReader reads the fields of one message parsed by p; ctx starts
// its error messages.
func NewFieldReader(p *Parser, ctx string) *FieldReader {
	return &FieldReader{p: p, ctx: ctx, seen: map[string]bool{}}
}

// Ctx is the reader's context, as its errors start with it.
func (fr *FieldReader) Ctx() string { return fr.ctx }

// Errorf is a ParseError at byte offset off, prefixed with the context.
func (fr *FieldReader) Errorf(off int, format string, args ...any) error {
	return fr.p.Errorf(off, "%s: %s", fr.ctx, fmt.Sprintf(format, args...))
}

// Single returns the one value of a singular field.
func (fr *FieldReader) Single(f *Field) (Value, error) {
	if fr.seen[f.Name] {
		return Value{}, fr.Errorf(f.NameStart, "field %q given more than once", f.Name)
	}
	fr.seen[f.Name] = true
	if f.List {
		return Value{}, fr.Errorf(f.NameStart, "field %q is not repeated; list syntax is not allowed", f.Name)
	}
	return f.Values[0], nil
}

// Message returns the message value of a singular field.
func (fr *FieldReader) Message(f *Field) (*Message, error) {
	v, err := fr.Single(f)
	if err != nil {
		return nil, err
	}
	if v.Msg == nil {
		return nil, fr.Errorf(v.Start, "field %q must be a message, got %s", f.Name, v.Text)
	}
	return v.Msg, nil
}

// Str returns the string value of a singular field.
func (fr *FieldReader) Str(f *Field) (string, error) {
	v, err := fr.Single(f)
	if err != nil {
		return "", err
	}
	return fr.StrValue(f.Name, v)
}

// StrValue returns v as a string, or an error naming field name.
func (fr *FieldReader) StrValue(name string, v Value) (string, error) {
	if v.Msg != nil || v.Kind != KindString {
		return "", fr.Errorf(v.Start, "field %q: expected a quoted string, got %s", name, ValueText(v))
	}
	return v.Str, nil
}

// ValueText describes v for error messages.
func ValueText(v Value) string {
	if v.Msg != nil {
		return "a message"
	}
	return v.Text
}

// Int64 returns the integer value of a singular field.
func (fr *FieldReader) Int64(f *Field) (int64, error) {
	v, err := fr.Single(f)
	if err != nil {
		return 0, err
	}
	if v.Msg != nil || v.Kind != KindNumber {
		return 0, fr.Errorf(v.Start, "field %q: expected an integer, got %s", f.Name, ValueText(v))
	}
	n, ok := ParseInt(v.Text)
	if !ok {
		return 0, fr.Errorf(v.Start, "field %q: %s is not a 64-bit integer", f.Name, v.Text)
	}
	return n, nil
}

// Float64 returns the number value of a singular field (integers, floats,
// inf and nan).
func (fr *FieldReader) Float64(f *Field) (float64, error) {
	v, err := fr.Single(f)
	if err != nil {
		return 0, err
	}
	if v.Msg == nil {
		if x, ok := ParseFloat(v); ok {
			return x, nil
		}
	}
	return 0, fr.Errorf(v.Start, "field %q: expected a number, got %s", f.Name, ValueText(v))
}

// Bool returns the boolean value of a singular field.
func (fr *FieldReader) Bool(f *Field) (bool, error) {
	v, err := fr.Single(f)
	if err != nil {
		return false, err
	}
	if v.Msg == nil {
		switch v.Text {
		case "true", "True", "t", "1":
			return true, nil
		case "false", "False", "f", "0":
			return false, nil
		}
	}
	return false, fr.Errorf(v.Start, "field %q: expected true or false, got %s", f.Name, ValueText(v))
}

// ParseInt parses an integer the way protobuf's text format writes
// them: decimal, 0x hex or 0-prefixed octal, with an optional '-'.
func ParseInt(text string) (int64, bool) {
	neg := strings.HasPrefix(text, "-")
	body := strings.TrimPrefix(text, "-")
	base := 10
	switch {
	case len(body) > 2 && (body[:2] == "0x" || body[:2] == "0X"):
		base, body = 16, body[2:]
	case len(body) > 1 && body[0] == '0':
		base, body = 8, body[1:]
	}
	if body == "" || strings.ContainsAny(body, "_+-") {
		return 0, false
	}
	u, err := strconv.ParseUint(body, base, 64)
	if err != nil {
		return 0, false
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return int64(-u), true // -(1<<63) wraps to math.MinInt64, as intended
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// ParseFloat parses a float value: an integer, a decimal with optional
// exponent and f suffix, or inf/infinity/nan (any case, optionally negated).
func ParseFloat(v Value) (float64, bool) {
	text := v.Text
	neg := strings.HasPrefix(text, "-")
	body := strings.TrimPrefix(text, "-")
	sign := 1.0
	if neg {
		sign = -1
	}
	if v.Kind == KindIdent {
		switch strings.ToLower(body) {
		case "inf", "infinity":
			return sign * math.Inf(1), true
		case "nan":
			return math.NaN(), true
		}
		return 0, false
	}
	if v.Kind != KindNumber {
		return 0, false
	}
	if n, ok := ParseInt(text); ok {
		if n == 0 && neg {
			return math.Copysign(0, -1), true
		}
		return float64(n), true
	}
	if strings.HasPrefix(body, "0x") || strings.HasPrefix(body, "0X") || strings.ContainsRune(body, '_') {
		return 0, false
	}
	body = strings.TrimSuffix(strings.TrimSuffix(body, "f"), "F")
	x, err := strconv.ParseFloat(body, 64)
	if err != nil {
		return 0, false
	}
	return sign * x, true
}

// SetCtx changes the context of later errors (once a message's name is
// known, say).
func (fr *FieldReader) SetCtx(ctx string) { fr.ctx = ctx }
