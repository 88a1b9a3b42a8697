package schema

// A small reader for the protobuf text format (the format of Merlin's
// schema.pbtxt). It builds a generic tree of fields that remembers the byte
// span of every field in the source, so that the schema layer can interpret
// the fields it knows and keep every other field as its verbatim text.
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

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// maxNesting bounds message nesting, so that hostile input cannot exhaust
// the stack (protobuf's own parsers use the same limit).
const maxNesting = 100

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

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokNumber
	tokString
	tokPunct
)

type token struct {
	kind  tokKind
	text  string // source text of the token
	str   string // decoded bytes, for strings
	start int    // byte offsets into the source
	end   int
}

func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of input"
	case tokString:
		return "string " + t.text
	}
	return fmt.Sprintf("%q", t.text)
}

// textValue is one value of a field: a nested message or a scalar.
type textValue struct {
	msg *textMessage // nil for scalars
	// Scalars: kind is tokIdent, tokNumber or tokString. text holds the
	// source text (with a leading '-' when negated); str the decoded bytes
	// of (concatenated) strings.
	kind  tokKind
	text  string
	str   string
	start int
}

// textField is one field occurrence. A field written with list syntax
// (`tag: ["a", "b"]`) has several values.
type textField struct {
	name      string
	nameStart int
	start     int // span of the whole field (name .. last token of the value)
	end       int
	values    []textValue
	list      bool
}

type textMessage struct {
	fields []*textField
	start  int // offset of the opening delimiter (0 for the top level)
}

type textParser struct {
	src        []byte
	pos        int
	lineStarts []int
	peeked     *token
}

func newTextParser(src []byte) *textParser {
	p := &textParser{src: src, lineStarts: []int{0}}
	for i, c := range src {
		if c == '\n' {
			p.lineStarts = append(p.lineStarts, i+1)
		}
	}
	return p
}

// position converts a byte offset to a 1-based line and column.
func (p *textParser) position(off int) (line, col int) {
	i := sort.Search(len(p.lineStarts), func(i int) bool { return p.lineStarts[i] > off }) - 1
	if i < 0 {
		i = 0
	}
	return i + 1, off - p.lineStarts[i] + 1
}

func (p *textParser) errorf(off int, format string, args ...any) *ParseError {
	line, col := p.position(off)
	return &ParseError{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

func (p *textParser) skipSpace() {
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) }

func (p *textParser) peek() (token, error) {
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

func (p *textParser) next() (token, error) {
	if p.peeked != nil {
		t := *p.peeked
		p.peeked = nil
		return t, nil
	}
	return p.lex()
}

func (p *textParser) lex() (token, error) {
	p.skipSpace()
	start := p.pos
	if p.pos >= len(p.src) {
		return token{kind: tokEOF, start: start, end: start}, nil
	}
	c := p.src[p.pos]
	switch {
	case isIdentStart(c):
		for p.pos < len(p.src) && isIdentChar(p.src[p.pos]) {
			p.pos++
		}
		return token{kind: tokIdent, text: string(p.src[start:p.pos]), start: start, end: p.pos}, nil
	case isDigit(c) || c == '.' && p.pos+1 < len(p.src) && isDigit(p.src[p.pos+1]):
		// Consume the longest run that can belong to a number; whether it is
		// a valid integer or float is decided by the consumer, which knows
		// the field's type.
		hex := c == '0' && p.pos+1 < len(p.src) && (p.src[p.pos+1] == 'x' || p.src[p.pos+1] == 'X')
		for p.pos < len(p.src) {
			d := p.src[p.pos]
			if isIdentChar(d) || d == '.' {
				p.pos++
				continue
			}
			if (d == '+' || d == '-') && !hex && (p.src[p.pos-1] == 'e' || p.src[p.pos-1] == 'E') {
				p.pos++
				continue
			}
			break
		}
		return token{kind: tokNumber, text: string(p.src[start:p.pos]), start: start, end: p.pos}, nil
	case c == '"' || c == '\'':
		return p.lexString(c)
	case strings.IndexByte("{}<>[]:,;/.-", c) >= 0:
		p.pos++
		return token{kind: tokPunct, text: string(c), start: start, end: p.pos}, nil
	}
	r, _ := utf8.DecodeRune(p.src[p.pos:])
	return token{}, p.errorf(start, "unexpected character %q", r)
}

// lexString reads a quoted string and decodes its C-style escapes:
// \a \b \f \n \r \t \v \\ \' \" \? , octal \o \oo \ooo, hex \xH \xHH and
// \uXXXX / \UXXXXXXXX (written as UTF-8).
func (p *textParser) lexString(quote byte) (token, error) {
	start := p.pos
	p.pos++
	var b strings.Builder
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			return token{}, p.errorf(start, "unterminated string")
		}
		c := p.src[p.pos]
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
		if p.pos >= len(p.src) {
			return token{}, p.errorf(start, "unterminated string")
		}
		e := p.src[p.pos]
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
			for i := 0; i < 2 && p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '7'; i++ {
				v = v*8 + int(p.src[p.pos]-'0')
				p.pos++
			}
			if v > 255 {
				return token{}, p.errorf(escStart, "octal escape \\%o is out of byte range", v)
			}
			b.WriteByte(byte(v))
		case 'x', 'X':
			v, n := 0, 0
			for n < 2 && p.pos < len(p.src) && hexVal(p.src[p.pos]) >= 0 {
				v = v*16 + hexVal(p.src[p.pos])
				p.pos++
				n++
			}
			if n == 0 {
				return token{}, p.errorf(escStart, "\\x escape without hex digits")
			}
			b.WriteByte(byte(v))
		case 'u', 'U':
			want := 4
			if e == 'U' {
				want = 8
			}
			v := 0
			for i := 0; i < want; i++ {
				if p.pos >= len(p.src) || hexVal(p.src[p.pos]) < 0 {
					return token{}, p.errorf(escStart, "\\%c escape needs %d hex digits", e, want)
				}
				v = v*16 + hexVal(p.src[p.pos])
				p.pos++
			}
			if v > utf8.MaxRune || v >= 0xD800 && v <= 0xDFFF {
				return token{}, p.errorf(escStart, "\\%c escape %X is not a valid code point", e, v)
			}
			b.WriteRune(rune(v))
		default:
			return token{}, p.errorf(escStart, "unknown escape \\%c", e)
		}
	}
	return token{kind: tokString, text: string(p.src[start:p.pos]), str: b.String(), start: start, end: p.pos}, nil
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

// parseTextProto parses a whole text-format document into its top-level
// message.
func parseTextProto(src []byte) (*textMessage, *textParser, error) {
	p := newTextParser(src)
	m, err := p.parseMessage(0, "", 0)
	if err != nil {
		return nil, p, err
	}
	return m, p, nil
}

// parseMessage reads fields until the closing delimiter (or the end of the
// input at the top level, where closing is "").
func (p *textParser) parseMessage(depth int, closing string, start int) (*textMessage, error) {
	m := &textMessage{start: start}
	for {
		t, err := p.peek()
		if err != nil {
			return nil, err
		}
		if t.kind == tokEOF {
			if closing != "" {
				line, col := p.position(m.start)
				return nil, p.errorf(t.start, "expected %q to close the message opened at %d:%d before end of input", closing, line, col)
			}
			return m, nil
		}
		if t.kind == tokPunct && t.text == closing {
			return m, nil
		}
		if t.kind == tokPunct && closing != "" && (t.text == "}" || t.text == ">") {
			line, col := p.position(m.start)
			return nil, p.errorf(t.start, "expected %q to close the message opened at %d:%d, got %q", closing, line, col, t.text)
		}
		f, err := p.parseField(depth)
		if err != nil {
			return nil, err
		}
		m.fields = append(m.fields, f)
		// Optional separator.
		if t, err = p.peek(); err != nil {
			return nil, err
		}
		if t.kind == tokPunct && (t.text == "," || t.text == ";") {
			_, _ = p.next()
		}
	}
}

func (p *textParser) parseField(depth int) (*textField, error) {
	t, err := p.next()
	if err != nil {
		return nil, err
	}
	f := &textField{nameStart: t.start, start: t.start}
	switch {
	case t.kind == tokIdent:
		f.name = t.text
	case t.kind == tokPunct && t.text == "[":
		// Extension or Any type name: [pkg.ext] or [type.googleapis.com/pkg.Msg].
		var b strings.Builder
		b.WriteByte('[')
		for {
			u, err := p.next()
			if err != nil {
				return nil, err
			}
			if u.kind == tokIdent {
				b.WriteString(u.text)
			} else {
				return nil, p.errorf(u.start, "expected a type name inside [...], got %s", u.describe())
			}
			u, err = p.next()
			if err != nil {
				return nil, err
			}
			if u.kind == tokPunct && u.text == "]" {
				break
			}
			if u.kind != tokPunct || u.text != "." && u.text != "/" {
				return nil, p.errorf(u.start, "expected '.', '/' or ']' in a bracketed field name, got %s", u.describe())
			}
			b.WriteString(u.text)
		}
		b.WriteByte(']')
		f.name = b.String()
	default:
		return nil, p.errorf(t.start, "expected a field name, got %s", t.describe())
	}

	t, err = p.peek()
	if err != nil {
		return nil, err
	}
	colon := false
	if t.kind == tokPunct && t.text == ":" {
		colon = true
		_, _ = p.next()
		if t, err = p.peek(); err != nil {
			return nil, err
		}
	}
	switch {
	case t.kind == tokPunct && (t.text == "{" || t.text == "<"):
		v, end, err := p.parseMessageValue(depth)
		if err != nil {
			return nil, err
		}
		f.values, f.end = []textValue{v}, end
	case colon && t.kind == tokPunct && t.text == "[":
		_, _ = p.next()
		f.list = true
		for {
			if t, err = p.peek(); err != nil {
				return nil, err
			}
			if t.kind == tokPunct && t.text == "]" && len(f.values) == 0 {
				break
			}
			var v textValue
			if t.kind == tokPunct && (t.text == "{" || t.text == "<") {
				v, _, err = p.parseMessageValue(depth)
			} else {
				v, _, err = p.parseScalar(f.name)
			}
			if err != nil {
				return nil, err
			}
			f.values = append(f.values, v)
			if t, err = p.next(); err != nil {
				return nil, err
			}
			if t.kind == tokPunct && t.text == "]" {
				p.peeked = &t // consumed below
				break
			}
			if t.kind != tokPunct || t.text != "," {
				return nil, p.errorf(t.start, "expected ',' or ']' in the list of field %q, got %s", f.name, t.describe())
			}
		}
		t, _ = p.next() // the ']'
		f.end = t.end
	case colon:
		v, end, err := p.parseScalar(f.name)
		if err != nil {
			return nil, err
		}
		f.values, f.end = []textValue{v}, end
	default:
		return nil, p.errorf(t.start, "expected ':' or '{' after field name %q, got %s", f.name, t.describe())
	}
	return f, nil
}

func (p *textParser) parseMessageValue(depth int) (textValue, int, error) {
	open, _ := p.next()
	if depth+1 > maxNesting {
		return textValue{}, 0, p.errorf(open.start, "messages nested deeper than %d levels", maxNesting)
	}
	closing := "}"
	if open.text == "<" {
		closing = ">"
	}
	m, err := p.parseMessage(depth+1, closing, open.start)
	if err != nil {
		return textValue{}, 0, err
	}
	end, _ := p.next() // the closing delimiter, checked by parseMessage
	return textValue{msg: m, start: open.start}, end.end, nil
}

func (p *textParser) parseScalar(field string) (textValue, int, error) {
	t, err := p.next()
	if err != nil {
		return textValue{}, 0, err
	}
	switch {
	case t.kind == tokString:
		// Adjacent strings are concatenated, as in C.
		var b strings.Builder
		b.WriteString(t.str)
		end := t.end
		for {
			u, err := p.peek()
			if err != nil {
				return textValue{}, 0, err
			}
			if u.kind != tokString {
				break
			}
			_, _ = p.next()
			b.WriteString(u.str)
			end = u.end
		}
		return textValue{kind: tokString, text: string(p.src[t.start:end]), str: b.String(), start: t.start}, end, nil
	case t.kind == tokIdent || t.kind == tokNumber:
		return textValue{kind: t.kind, text: t.text, start: t.start}, t.end, nil
	case t.kind == tokPunct && t.text == "-":
		u, err := p.next()
		if err != nil {
			return textValue{}, 0, err
		}
		if u.kind != tokNumber && u.kind != tokIdent {
			return textValue{}, 0, p.errorf(u.start, "field %q: expected a number after '-', got %s", field, u.describe())
		}
		return textValue{kind: u.kind, text: "-" + u.text, start: t.start}, u.end, nil
	}
	return textValue{}, 0, p.errorf(t.start, "field %q: expected a value, got %s", field, t.describe())
}
