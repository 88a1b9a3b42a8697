package textpb

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTextStringEscapes(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"plain", `"abc"`, "abc"},
		{"single quotes", `'a"b'`, `a"b`},
		{"named escapes", `"\a\b\f\n\r\t\v\\\'\"\?"`, "\a\b\f\n\r\t\v\\'\"?"},
		{"octal 3 digits", `"\021\000\377"`, "\x11\x00\xff"},
		{"octal short", `"\0a\12b"`, "\x00a\nb"},
		{"octal stops at 3 digits", `"\1234"`, "S4"},
		{"hex", `"\x41\x7e\xA"`, "A~\n"},
		{"unicode", `"\u00e9\U0001F600"`, "é😀"},
		{"utf8 kept", `"été"`, "été"},
		{"concatenation", `"ab" 'cd'   "ef"`, "abcdef"},
		{"concatenation across lines", "\"ab\" # c\n \"cd\"", "abcd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, _, err := Parse([]byte("f: " + tc.src))
			require.NoError(t, err)
			require.Len(t, m.Fields, 1)
			assert.Equal(t, tc.want, m.Fields[0].Values[0].Str)
		})
	}
}

func TestTextStructure(t *testing.T) {
	src := `# leading comment
a: 1  # trailing comment
b { c: "x" d: -2.5e-3 }
b: < c: 'y'; >
e: [1, -2, 0x1F]
g: []
h: [{c: "z"}, <c: "w">],
[type.googleapis.com/pkg.Msg] { i: inf }
j: -inf;
`
	m, _, err := Parse([]byte(src))
	require.NoError(t, err)
	var names []string
	for _, f := range m.Fields {
		names = append(names, f.Name)
	}
	assert.Equal(t, []string{"a", "b", "b", "e", "g", "h", "[type.googleapis.com/pkg.Msg]", "j"}, names)

	// Spans cover the field exactly, comments and separators excluded.
	assert.Equal(t, "a: 1", src[m.Fields[0].Start:m.Fields[0].End])
	assert.Equal(t, `b { c: "x" d: -2.5e-3 }`, src[m.Fields[1].Start:m.Fields[1].End])
	assert.Equal(t, `b: < c: 'y'; >`, src[m.Fields[2].Start:m.Fields[2].End])
	assert.Equal(t, `e: [1, -2, 0x1F]`, src[m.Fields[3].Start:m.Fields[3].End])

	b := m.Fields[1].Values[0].Msg
	require.NotNil(t, b)
	require.Len(t, b.Fields, 2)
	assert.Equal(t, "-2.5e-3", b.Fields[1].Values[0].Text)
	assert.Equal(t, "y", m.Fields[2].Values[0].Msg.Fields[0].Values[0].Str)

	e := m.Fields[3]
	assert.True(t, e.List)
	require.Len(t, e.Values, 3)
	assert.Equal(t, []string{"1", "-2", "0x1F"}, []string{e.Values[0].Text, e.Values[1].Text, e.Values[2].Text})
	assert.True(t, m.Fields[4].List)
	assert.Empty(t, m.Fields[4].Values)
	require.Len(t, m.Fields[5].Values, 2)
	assert.Equal(t, "w", m.Fields[5].Values[1].Msg.Fields[0].Values[0].Str)
	assert.Equal(t, "-inf", m.Fields[7].Values[0].Text)
}

func TestTextNumbers(t *testing.T) {
	ints := []struct {
		text string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"42", 42, true}, {"-42", -42, true}, {"0x1f", 31, true}, {"-0X10", -16, true},
		{"017", 15, true}, {"9223372036854775807", 9223372036854775807, true},
		{"-9223372036854775808", -9223372036854775808, true},
		{"9223372036854775808", 0, false}, {"1.5", 0, false}, {"1e3", 0, false}, {"1_000", 0, false},
		{"08", 0, false}, {"0x", 0, false}, {"12abc", 0, false},
	}
	for _, tc := range ints {
		got, ok := ParseInt(tc.text)
		assert.Equal(t, tc.ok, ok, tc.text)
		if tc.ok {
			assert.Equal(t, tc.want, got, tc.text)
		}
	}
	floats := []struct {
		text string
		kind Kind
		want float64
		ok   bool
	}{
		{"1", KindNumber, 1, true}, {"-2.5", KindNumber, -2.5, true}, {"1e3", KindNumber, 1000, true},
		{"2.25e+01", KindNumber, 22.5, true}, {"1.5E-2", KindNumber, 0.015, true}, {".5", KindNumber, 0.5, true},
		{"1.5f", KindNumber, 1.5, true}, {"0x10", KindNumber, 16, true}, {"inf", KindIdent, posInf, true},
		{"-Infinity", KindIdent, negInf, true}, {"1.2.3", KindNumber, 0, false}, {"abc", KindIdent, 0, false},
		{"0x1p3", KindNumber, 0, false},
	}
	for _, tc := range floats {
		got, ok := ParseFloat(Value{Kind: tc.kind, Text: tc.text})
		assert.Equal(t, tc.ok, ok, tc.text)
		if tc.ok {
			assert.Equal(t, tc.want, got, tc.text)
		}
	}
	nan, ok := ParseFloat(Value{Kind: KindIdent, Text: "nan"})
	assert.True(t, ok)
	assert.True(t, math.IsNaN(nan))
}

var (
	posInf = math.Inf(1)
	negInf = math.Inf(-1)
)

func TestTextSyntaxErrors(t *testing.T) {
	cases := []struct {
		name      string
		src       string
		line, col int
		msg       string
	}{
		{"unterminated string", "a: \"abc", 1, 4, "unterminated string"},
		{"newline in string", "a: \"ab\ncd\"", 1, 4, "unterminated string"},
		{"bad escape", `a: "\q"`, 1, 5, `unknown escape \q`},
		{"octal out of range", `a: "\400"`, 1, 5, "out of byte range"},
		{"hex without digits", `a: "\xg"`, 1, 5, "without hex digits"},
		{"short unicode", `a: "\u12"`, 1, 5, "needs 4 hex digits"},
		{"surrogate", `a: "\ud800"`, 1, 5, "not a valid code point"},
		{"missing colon", "a 1", 1, 3, `expected ':' or '{' after field name "a"`},
		{"missing value", "a:\n}", 2, 1, `field "a": expected a value`},
		{"unclosed message", "a {\n  b: 1\n", 3, 1, `expected "}" to close the message opened at 1:3 before end of input`},
		{"mismatched delimiters", "a < b: 1 }", 1, 10, `expected ">" to close the message opened at 1:3, got "}"`},
		{"stray close", "a: 1\n}", 2, 1, "expected a field name"},
		{"bad character", "a: 1\n  @", 2, 3, "unexpected character '@'"},
		{"bad list separator", "a: [1 2]", 1, 7, "expected ',' or ']'"},
		{"trailing comma in list", "a: [1, ]", 1, 8, "expected a value"},
		{"minus without number", "a: -\"x\"", 1, 5, "expected a number after '-'"},
		{"bad bracketed name", "[a.] {}", 1, 4, "expected a type name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.src))
			require.Error(t, err)
			var pe *ParseError
			require.True(t, errors.As(err, &pe), "%T: %v", err, err)
			assert.Equal(t, tc.line, pe.Line, err.Error())
			assert.Equal(t, tc.col, pe.Col, err.Error())
			assert.Contains(t, pe.Msg, tc.msg)
		})
	}
}

func TestTextNestingLimit(t *testing.T) {
	deep := strings.Repeat("a {", MaxNesting) + strings.Repeat("}", MaxNesting)
	_, _, err := Parse([]byte(deep))
	require.NoError(t, err)
	tooDeep := strings.Repeat("a {", MaxNesting+1) + strings.Repeat("}", MaxNesting+1)
	_, _, err = Parse([]byte(tooDeep))
	require.ErrorContains(t, err, "nested deeper")
}
