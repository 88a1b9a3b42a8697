// Package textpb reads and writes the protobuf text format (the format of
// Merlin's schema.pbtxt) for package schema: a parser that keeps the byte
// span of every field, so that schema can interpret the fields it knows and
// keep every other field as its verbatim text, scalar parsing, and quoting.
//
// Grammar (what protobuf's own text parser accepts, minus the parts no
// schema uses such as Any expansion inside scalars):
//
//	message = { field [ "," | ";" ] }
//	field   = name ( ":" scalar | ":" list | [ ":" ] msgval )
//	name    = ident | "[" ident { ("." | "/") ident } "]"
//	msgval  = "{" message "}" | "<" message ">"
//	list    = "[" [ value { "," value } ] "]"
//	scalar  = string { string } | [ "-" ] ( number | ident ) | ident
//
// Comments run from '#' to the end of the line.
package textpb

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// MaxNesting bounds message nesting, so that hostile input cannot exhaust
// the stack (protobuf's own parsers use the same limit).
const MaxNesting = 100

// ParseError is a syntax or content error in a schema file, with the
// 1-based line and column (in bytes) where it was found.
type ParseError struct {
	File string // set by Load; empty when parsing a stream
	Line int
	Col  int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.File != "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("schema: line %d, column %d: %s", e.Line, e.Col, e.Msg)
}

// Kind is the lexical kind of a scalar value.
type Kind int

const (
	kindEOF Kind = iota
	KindIdent
	KindNumber
	KindString
	kindPunct
)

type token struct {
	Kind  Kind
	Text  string // source text of the token
	Str   string // decoded bytes, for strings
	Start int    // byte offsets into the source
	End   int
}

func (t token) describe() string {
	switch t.Kind {
	case kindEOF:
		return "end of input"
	case KindString:
		return "string " + t.Text
	}
	return fmt.Sprintf("%q", t.Text)
}

// Value is one value of a field: a nested message or a scalar.
type Value struct {
	Msg *Message // nil for scalars
	// Scalars: Kind is KindIdent, KindNumber or KindString. Text holds the
	// source text (with a leading '-' when negated); Str the decoded bytes
	// of (concatenated) strings.
	Kind  Kind
	Text  string
	Str   string
	Start int
}

// Field is one field occurrence. A field written with list syntax
// (`tag: ["a", "b"]`) has several values.
type Field struct {
	Name      string
	NameStart int
	Start     int // span of the whole field (name .. last token of the value)
	End       int
	Values    []Value
	List      bool
}

// Message is a message: its fields in source order.
type Message struct {
	Fields []*Field
	Start  int // offset of the opening delimiter (0 for the top level)
}

// Parser holds the source of a parse, for positions and verbatim text.
type Parser struct {
	Src        []byte
	pos        int
	lineStarts []int
	peeked     *token
}

func newParser(src []byte) *Parser {
	p := &Parser{Src: src, lineStarts: []int{0}}
	for i, c := range src {
		if c == '\n' {
			p.lineStarts = append(p.lineStarts, i+1)
		}
	}
	return p
}

// Position converts a byte offset to a 1-based line and column.
func (p *Parser) Position(off int) (line, col int) {
	i := sort.Search(len(p.lineStarts), func(i int) bool { return p.lineStarts[i] > off }) - 1
	if i < 0 {
		i = 0
	}
	return i + 1, off - p.lineStarts[i] + 1
}

// ErrorAt is a ParseError at byte offset off of src, for errors found by
// other readers of the same file (JSON).
func ErrorAt(src []byte, off int, msg string) *ParseError {
	line, col := newParser(src).Position(off)
	return &ParseError{Line: line, Col: col, Msg: msg}
}

// Errorf is a ParseError at byte offset off of the parsed source.
func (p *Parser) Errorf(off int, format string, args ...any) *ParseError {
	line, col := p.Position(off)
	return &ParseError{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

func (p *Parser) skipSpace() {
	for p.pos < len(p.Src) {
		c := p.Src[p.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			p.pos++
		case c == '#':
			for p.pos < len(p.Src) && p.Src[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }

// IsIdentChar reports whether c may continue an identifier.
func IsIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) }

func (p *Parser) peek() (token, error) {
	if p.peeked != nil {
		return *p.peeked, nil
	}
	t, err := p.lex()
	if err != nil {
		return token{}, err
	}
	p.peeked = &t
	return t, nil
}

func (p *Parser) next() (token, error) {
	if p.peeked != nil {
		t := *p.peeked
		p.peeked = nil
		return t, nil
	}
	return p.lex()
}

func (p *Parser) lex() (token, error) {
	p.skipSpace()
	start := p.pos
	if p.pos >= len(p.Src) {
		return token{Kind: kindEOF, Start: start, End: start}, nil
	}
	c := p.Src[p.pos]
	switch {
	case isIdentStart(c):
		for p.pos < len(p.Src) && IsIdentChar(p.Src[p.pos]) {
			p.pos++
		}
		return token{Kind: KindIdent, Text: string(p.Src[start:p.pos]), Start: start, End: p.pos}, nil
	case isDigit(c) || c == '.' && p.pos+1 < len(p.Src) && isDigit(p.Src[p.pos+1]):
		// Consume the longest run that can belong to a number; whether it is
		// a valid integer or float is decided by the consumer, which knows
		// the field's type.
		hex := c == '0' && p.pos+1 < len(p.Src) && (p.Src[p.pos+1] == 'x' || p.Src[p.pos+1] == 'X')
		for p.pos < len(p.Src) {
			d := p.Src[p.pos]
			if IsIdentChar(d) || d == '.' {
				p.pos++
				continue
			}
			if (d == '+' || d == '-') && !hex && (p.Src[p.pos-1] == 'e' || p.Src[p.pos-1] == 'E') {
				p.pos++
				continue
			}
			break
		}
		return token{Kind: KindNumber, Text: string(p.Src[start:p.pos]), Start: start, End: p.pos}, nil
	case c == '"' || c == '\'':
		return p.lexString(c)
	case strings.IndexByte("{}<>[]:,;/.-", c) >= 0:
		p.pos++
		return token{Kind: kindPunct, Text: string(c), Start: start, End: p.pos}, nil
	}
	r, _ := utf8.DecodeRune(p.Src[p.pos:])
	return token{}, p.Errorf(start, "unexpected character %q", r)
}

// lexString reads a quoted string and decodes its C-style escapes:
// \a \b \f \n \r \t \v \\ \' \" \? , octal \o \oo \ooo, hex \xH \xHH and
// \uXXXX / \UXXXXXXXX (written as UTF-8).
func (p *Parser) lexString(quote byte) (token, error) {
	start := p.pos
	p.pos++
	var b strings.Builder
	for {
		if p.pos >= len(p.Src) || p.Src[p.pos] == '\n' {
			return token{}, p.Errorf(start, "unterminated string")
		}
		c := p.Src[p.pos]
		if c == quote {
			p.pos++
			break
		}
		if c != '\\' {
			b.WriteByte(c)
			p.pos++
			continue
		}
		escStart := p.pos
		p.pos++
		if p.pos >= len(p.Src) {
			return token{}, p.Errorf(start, "unterminated string")
		}
		e := p.Src[p.pos]
		p.pos++
		switch e {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '\\', '\'', '"', '?':
			b.WriteByte(e)
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(e - '0')
			for i := 0; i < 2 && p.pos < len(p.Src) && p.Src[p.pos] >= '0' && p.Src[p.pos] <= '7'; i++ {
				v = v*8 + int(p.Src[p.pos]-'0')
				p.pos++
			}
			if v > 255 {
				return token{}, p.Errorf(escStart, "octal escape \\%o is out of byte range", v)
			}
			b.WriteByte(byte(v))
		case 'x', 'X':
			v, n := 0, 0
			for n < 2 && p.pos < len(p.Src) && hexVal(p.Src[p.pos]) >= 0 {
				v = v*16 + hexVal(p.Src[p.pos])
				p.pos++
				n++
			}
			if n == 0 {
				return token{}, p.Errorf(escStart, "\\x escape without hex digits")
			}
			b.WriteByte(byte(v))
		case 'u', 'U':
			want := 4
			if e == 'U' {
				want = 8
			}
			v := 0
			for i := 0; i < want; i++ {
				if p.pos >= len(p.Src) || hexVal(p.Src[p.pos]) < 0 {
					return token{}, p.Errorf(escStart, "\\%c escape needs %d hex digits", e, want)
				}
				v = v*16 + hexVal(p.Src[p.pos])
				p.pos++
			}
			if v > utf8.MaxRune || v >= 0xD800 && v <= 0xDFFF {
				return token{}, p.Errorf(escStart, "\\%c escape %X is not a valid code point", e, v)
			}
			b.WriteRune(rune(v))
		default:
			return token{}, p.Errorf(escStart, "unknown escape \\%c", e)
		}
	}
	return token{Kind: KindString, Text: string(p.Src[start:p.pos]), Str: b.String(), Start: start, End: p.pos}, nil
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Parse parses a whole text-format document into its top-level
// message.
func Parse(src []byte) (*Message, *Parser, error) {
	p := newParser(src)
	m, err := p.parseMessage(0, "", 0)
	if err != nil {
		return nil, p, err
	}
	return m, p, nil
}

// parseMessage reads fields until the closing delimiter (or the end of the
// input at the top level, where closing is "").
func (p *Parser) parseMessage(depth int, closing string, start int) (*Message, error) {
	m := &Message{Start: start}
	for {
		t, err := p.peek()
		if err != nil {
			return nil, err
		}
		if t.Kind == kindEOF {
			if closing != "" {
				line, col := p.Position(m.Start)
				return nil, p.Errorf(t.Start, "expected %q to close the message opened at %d:%d before end of input", closing, line, col)
			}
			return m, nil
		}
		if t.Kind == kindPunct && t.Text == closing {
			return m, nil
		}
		if t.Kind == kindPunct && closing != "" && (t.Text == "}" || t.Text == ">") {
			line, col := p.Position(m.Start)
			return nil, p.Errorf(t.Start, "expected %q to close the message opened at %d:%d, got %q", closing, line, col, t.Text)
		}
		f, err := p.parseField(depth)
		if err != nil {
			return nil, err
		}
		m.Fields = append(m.Fields, f)
		// Optional separator.
		if t, err = p.peek(); err != nil {
			return nil, err
		}
		if t.Kind == kindPunct && (t.Text == "," || t.Text == ";") {
			_, _ = p.next()
		}
	}
}

func (p *Parser) parseField(depth int) (*Field, error) {
	t, err := p.next()
	if err != nil {
		return nil, err
	}
	f := &Field{NameStart: t.Start, Start: t.Start}
	switch {
	case t.Kind == KindIdent:
		f.Name = t.Text
	case t.Kind == kindPunct && t.Text == "[":
		// Extension or Any type name: [pkg.ext] or [type.googleapis.com/pkg.Msg].
		var b strings.Builder
		b.WriteByte('[')
		for {
			u, err := p.next()
			if err != nil {
				return nil, err
			}
			if u.Kind == KindIdent {
				b.WriteString(u.Text)
			} else {
				return nil, p.Errorf(u.Start, "expected a type name inside [...], got %s", u.describe())
			}
			u, err = p.next()
			if err != nil {
				return nil, err
			}
			if u.Kind == kindPunct && u.Text == "]" {
				break
			}
			if u.Kind != kindPunct || u.Text != "." && u.Text != "/" {
				return nil, p.Errorf(u.Start, "expected '.', '/' or ']' in a bracketed field name, got %s", u.describe())
			}
			b.WriteString(u.Text)
		}
		b.WriteByte(']')
		f.Name = b.String()
	default:
		return nil, p.Errorf(t.Start, "expected a field name, got %s", t.describe())
	}

	t, err = p.peek()
	if err != nil {
		return nil, err
	}
	colon := false
	if t.Kind == kindPunct && t.Text == ":" {
		colon = true
		_, _ = p.next()
		if t, err = p.peek(); err != nil {
			return nil, err
		}
	}
	switch {
	case t.Kind == kindPunct && (t.Text == "{" || t.Text == "<"):
		v, end, err := p.parseMessageValue(depth)
		if err != nil {
			return nil, err
		}
		f.Values, f.End = []Value{v}, end
	case colon && t.Kind == kindPunct && t.Text == "[":
		_, _ = p.next()
		f.List = true
		for {
			if t, err = p.peek(); err != nil {
				return nil, err
			}
			if t.Kind == kindPunct && t.Text == "]" && len(f.Values) == 0 {
				break
			}
			var v Value
			if t.Kind == kindPunct && (t.Text == "{" || t.Text == "<") {
				v, _, err = p.parseMessageValue(depth)
			} else {
				v, _, err = p.parseScalar(f.Name)
			}
			if err != nil {
				return nil, err
			}
			f.Values = append(f.Values, v)
			if t, err = p.next(); err != nil {
				return nil, err
			}
			if t.Kind == kindPunct && t.Text == "]" {
				p.peeked = &t // consumed below
				break
			}
			if t.Kind != kindPunct || t.Text != "," {
				return nil, p.Errorf(t.Start, "expected ',' or ']' in the list of field %q, got %s", f.Name, t.describe())
			}
		}
		t, _ = p.next() // the ']'
		f.End = t.End
	case colon:
		v, end, err := p.parseScalar(f.Name)
		if err != nil {
			return nil, err
		}
		f.Values, f.End = []Value{v}, end
	default:
		return nil, p.Errorf(t.Start, "expected ':' or '{' after field name %q, got %s", f.Name, t.describe())
	}
	return f, nil
}

func (p *Parser) parseMessageValue(depth int) (Value, int, error) {
	open, _ := p.next()
	if depth+1 > MaxNesting {
		return Value{}, 0, p.Errorf(open.Start, "messages nested deeper than %d levels", MaxNesting)
	}
	closing := "}"
	if open.Text == "<" {
		closing = ">"
	}
	m, err := p.parseMessage(depth+1, closing, open.Start)
	if err != nil {
		return Value{}, 0, err
	}
	end, _ := p.next() // the closing delimiter, checked by parseMessage
	return Value{Msg: m, Start: open.Start}, end.End, nil
}

func (p *Parser) parseScalar(field string) (Value, int, error) {
	t, err := p.next()
	if err != nil {
		return Value{}, 0, err
	}
	switch {
	case t.Kind == KindString:
		// Adjacent strings are concatenated, as in C.
		var b strings.Builder
		b.WriteString(t.Str)
		end := t.End
		for {
			u, err := p.peek()
			if err != nil {
				return Value{}, 0, err
			}
			if u.Kind != KindString {
				break
			}
			_, _ = p.next()
			b.WriteString(u.Str)
			end = u.End
		}
		return Value{Kind: KindString, Text: string(p.Src[t.Start:end]), Str: b.String(), Start: t.Start}, end, nil
	case t.Kind == KindIdent || t.Kind == KindNumber:
		return Value{Kind: t.Kind, Text: t.Text, Start: t.Start}, t.End, nil
	case t.Kind == kindPunct && t.Text == "-":
		u, err := p.next()
		if err != nil {
			return Value{}, 0, err
		}
		if u.Kind != KindNumber && u.Kind != KindIdent {
			return Value{}, 0, p.Errorf(u.Start, "field %q: expected a number after '-', got %s", field, u.describe())
		}
		return Value{Kind: u.Kind, Text: "-" + u.Text, Start: t.Start}, u.End, nil
	}
	return Value{}, 0, p.Errorf(t.Start, "field %q: expected a value, got %s", field, t.describe())
}
