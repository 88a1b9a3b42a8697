package textpb

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Quote quotes a string field: printable UTF-8 is kept, everything else
// is escaped as protobuf's text printer does.
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r >= utf8.RuneSelf && r != utf8.RuneError && unicode.IsPrint(r) {
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		escapeByte(&b, s[i])
		i++
	}
	b.WriteByte('"')
	return b.String()
}

// QuoteBytes quotes a bytes field with every non-ASCII or non-printable byte
// as an octal escape, like protobuf's text printer.
func QuoteBytes(data []byte) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range data {
		escapeByte(&b, c)
	}
	b.WriteByte('"')
	return b.String()
}

func escapeByte(b *strings.Builder, c byte) {
	switch c {
	case '\n':
		b.WriteString(`\n`)
	case '\r':
		b.WriteString(`\r`)
	case '\t':
		b.WriteString(`\t`)
	case '"':
		b.WriteString(`\"`)
	case '\'':
		b.WriteString(`\'`)
	case '\\':
		b.WriteString(`\\`)
	default:
		if c < 0x20 || c >= 0x7f {
			fmt.Fprintf(b, `\%03o`, c)
		} else {
			b.WriteByte(c)
		}
	}
}

// FormatFloat writes a float so that ParseFloat reads it back exactly.
func FormatFloat(x float64) string {
	switch {
	case math.IsInf(x, 1):
		return "inf"
	case math.IsInf(x, -1):
		return "-inf"
	case math.IsNaN(x):
		return "nan"
	}
	return strconv.FormatFloat(x, 'g', -1, 64)
}
