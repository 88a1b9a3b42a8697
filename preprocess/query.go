package preprocess

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
)

// A row filter in the subset of pandas' DataFrame.query syntax that
// Merlin's quick-start script passes on (--filter_query):
//
//	expr       = or
//	or         = and { ("or" | "|") and }
//	and        = not { ("and" | "&") not }
//	not        = ("not" | "~") not | "(" expr ")" | comparison
//	comparison = operand op operand | column ["not"] "in" list
//	operand    = column | literal
//	op         = "==" | "!=" | "<" | "<=" | ">" | ">="
//	list       = "[" literal { "," literal } "]" | "(" literal { "," literal } ")"
//	literal    = number | 'string' | "string"
//	column     = identifier | `any name`
//
// Each comparison has one column and one literal. As in pandas, a null
// value compares false, except with != and "not in".
//
// A number literal compares numerically (a string column's value must then
// parse as a number: CSV columns are read as strings); a string literal
// compares with the value's text (an integer's decimal form), by byte order
// for < and >, which a numeric column refuses.

// querySupported is appended to every refusal of a query.
const querySupported = "supported: comparisons of a column with a literal (==, !=, <, <=, >, >=), " +
	"`in` and `not in` lists of literals, and/or/not (also &, |, ~) and parentheses"

// QueryError reports a filter query that is malformed or goes beyond the
// supported subset.
type QueryError struct {
	Query  string
	Offset int // byte offset in Query
	Msg    string
}

func (e *QueryError) Error() string {
	return fmt.Sprintf("filter query %q: at offset %d: %s (%s)", e.Query, e.Offset, e.Msg, querySupported)
}

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokIdent
	tokNumber
	tokString
	tokOp    // comparison operator
	tokPunct // ( ) [ ] ,
	tokLogic // & | ~
	tokOther // anything else: refused by the parser
)

type token struct {
	kind tokKind
	text string // identifier name, string value, operator, number text
	num  float64
	pos  int
}

func lexQuery(q string) ([]token, error) {
	var toks []token
	bad := func(pos int, format string, args ...any) error {
		return &QueryError{Query: q, Offset: pos, Msg: fmt.Sprintf(format, args...)}
	}
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == '[' || c == ']' || c == ',':
			toks = append(toks, token{kind: tokPunct, text: q[i : i+1], pos: i})
			i++
		case c == '&' || c == '|' || c == '~':
			toks = append(toks, token{kind: tokLogic, text: q[i : i+1], pos: i})
			i++
		case c == '=' || c == '!' || c == '<' || c == '>':
			op := q[i : i+1]
			if i+1 < len(q) && q[i+1] == '=' {
				op = q[i : i+2]
			}
			if op == "=" || op == "!" {
				return nil, bad(i, "%q is not a comparison operator", op)
			}
			toks = append(toks, token{kind: tokOp, text: op, pos: i})
			i += len(op)
		case c == '\'' || c == '"':
			var sb strings.Builder
			j := i + 1
			for ; j < len(q) && q[j] != c; j++ {
				if q[j] == '\\' && j+1 < len(q) {
					j++
				}
				sb.WriteByte(q[j])
			}
			if j >= len(q) {
				return nil, bad(i, "unterminated string")
			}
			toks = append(toks, token{kind: tokString, text: sb.String(), pos: i})
			i = j + 1
		case c == '`':
			j := strings.IndexByte(q[i+1:], '`')
			if j < 0 {
				return nil, bad(i, "unterminated `column name`")
			}
			toks = append(toks, token{kind: tokIdent, text: q[i+1 : i+1+j], pos: i})
			i += j + 2
		case startsNumber(q[i:]):
			j := i + 1
			for j < len(q) && (q[j] >= '0' && q[j] <= '9' || q[j] == '.' || q[j] == 'e' || q[j] == 'E' ||
				(q[j] == '-' || q[j] == '+') && (q[j-1] == 'e' || q[j-1] == 'E')) {
				j++
			}
			v, err := strconv.ParseFloat(q[i:j], 64)
			if err != nil || math.IsInf(v, 0) {
				return nil, bad(i, "%q is not a number", q[i:j])
			}
			toks = append(toks, token{kind: tokNumber, text: q[i:j], num: v, pos: i})
			i = j
		case c == '_' || unicode.IsLetter(rune(c)):
			j := i + 1
			for j < len(q) && (q[j] == '_' || unicode.IsLetter(rune(q[j])) || q[j] >= '0' && q[j] <= '9') {
				j++
			}
			toks = append(toks, token{kind: tokIdent, text: q[i:j], pos: i})
			i = j
		default:
			toks = append(toks, token{kind: tokOther, text: q[i : i+1], pos: i})
			i++
		}
	}
	return append(toks, token{kind: tokEOF, pos: len(q)}), nil
}

// startsNumber reports whether s starts with a number literal: a digit, or
// a sign or point followed by one.
func startsNumber(s string) bool {
	digit := func(i int) bool { return i < len(s) && s[i] >= '0' && s[i] <= '9' }
	switch {
	case digit(0):
		return true
	case len(s) > 1 && s[0] == '.':
		return digit(1)
	case len(s) > 1 && (s[0] == '-' || s[0] == '+'):
		return digit(1) || s[1] == '.' && digit(2)
	}
	return false
}

// qnode is a node of a parsed query.
type qnode struct {
	op   string // "and", "or", "not", a comparison operator, "in", "not in"
	kids []*qnode
	// comparisons
	column string
	col    int // position of column in the scanned columns
	lits   []qlit
}

type qlit struct {
	isNum bool
	num   float64
	str   string
}

func (l qlit) String() string {
	if l.isNum {
		return strconv.FormatFloat(l.num, 'g', -1, 64)
	}
	return strconv.Quote(l.str)
}

type queryParser struct {
	q    string
	toks []token
	i    int
}

// parseQuery parses a filter query.
func parseQuery(q string) (*qnode, error) {
	if strings.TrimSpace(q) == "" {
		return nil, &QueryError{Query: q, Msg: "empty query"}
	}
	toks, err := lexQuery(q)
	if err != nil {
		return nil, err
	}
	p := &queryParser{q: q, toks: toks}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, p.unexpected(t)
	}
	return n, nil
}

func (p *queryParser) peek() token { return p.toks[p.i] }
func (p *queryParser) next() token { t := p.toks[p.i]; p.i++; return t }

func (p *queryParser) errAt(pos int, format string, args ...any) error {
	return &QueryError{Query: p.q, Offset: pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *queryParser) unexpected(t token) error {
	if t.kind == tokEOF {
		return p.errAt(t.pos, "unexpected end of query")
	}
	return p.errAt(t.pos, "unexpected %q", t.text)
}

func isWord(t token, w string) bool { return t.kind == tokIdent && t.text == w }

func (p *queryParser) or() (*qnode, error) {
	return p.binary("or", "|", p.and)
}

func (p *queryParser) and() (*qnode, error) {
	return p.binary("and", "&", p.not)
}

// binary parses sub { (word | sym) sub } into one n-ary node.
func (p *queryParser) binary(word, sym string, sub func() (*qnode, error)) (*qnode, error) {
	n, err := sub()
	if err != nil {
		return nil, err
	}
	kids := []*qnode{n}
	for t := p.peek(); isWord(t, word) || t.kind == tokLogic && t.text == sym; t = p.peek() {
		p.next()
		k, err := sub()
		if err != nil {
			return nil, err
		}
		kids = append(kids, k)
	}
	if len(kids) == 1 {
		return n, nil
	}
	return &qnode{op: word, kids: kids}, nil
}

func (p *queryParser) not() (*qnode, error) {
	t := p.peek()
	switch {
	case isWord(t, "not") || t.kind == tokLogic && t.text == "~":
		p.next()
		k, err := p.not()
		if err != nil {
			return nil, err
		}
		return &qnode{op: "not", kids: []*qnode{k}}, nil
	case t.kind == tokPunct && t.text == "(":
		p.next()
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tokPunct || c.text != ")" {
			return nil, p.errAt(c.pos, "missing )")
		}
		return n, nil
	}
	return p.comparison()
}

// operand reads a column name or a literal.
func (p *queryParser) operand() (name string, lit qlit, isCol bool, err error) {
	t := p.next()
	switch t.kind {
	case tokIdent:
		switch t.text {
		case "and", "or", "not", "in":
			return "", qlit{}, false, p.errAt(t.pos, "expected a column or a literal, got %q", t.text)
		case "True", "False", "None", "nan", "NaN", "inf":
			return "", qlit{}, false, p.errAt(t.pos, "the literal %s is not supported; compare with a number or a quoted string", t.text)
		}
		if n := p.peek(); n.kind == tokPunct && (n.text == "(" || n.text == "[") {
			return "", qlit{}, false, p.errAt(n.pos, "function calls and indexing are not supported")
		}
		return t.text, qlit{}, true, nil
	case tokNumber:
		return "", qlit{isNum: true, num: t.num}, false, nil
	case tokString:
		return "", qlit{str: t.text}, false, nil
	}
	if t.kind == tokOther && t.text == "@" {
		return "", qlit{}, false, p.errAt(t.pos, "@variables are not supported")
	}
	return "", qlit{}, false, p.unexpected(t)
}

// flipped is the operator with its operands swapped (1 < a is a > 1).
var flipped = map[string]string{"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

func (p *queryParser) comparison() (*qnode, error) {
	start := p.peek().pos
	lname, llit, lcol, err := p.operand()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	if lcol && (isWord(t, "in") || isWord(t, "not")) {
		p.next()
		op := "in"
		if t.text == "not" {
			if in := p.next(); !isWord(in, "in") {
				return nil, p.errAt(in.pos, "expected \"in\" after \"not\"")
			}
			op = "not in"
		}
		lits, err := p.list()
		if err != nil {
			return nil, err
		}
		return &qnode{op: op, column: lname, lits: lits}, nil
	}
	if t.kind != tokOp {
		switch {
		case t.kind == tokOther && strings.Contains("+-*/%", t.text):
			return nil, p.errAt(t.pos, "arithmetic (%s) is not supported", t.text)
		case t.kind == tokOther && t.text == ".":
			return nil, p.errAt(t.pos, "attribute access (.) is not supported")
		case lcol:
			return nil, p.errAt(t.pos, "expected a comparison after column %q", lname)
		}
		return nil, p.unexpected(t)
	}
	p.next()
	rname, rlit, rcol, err := p.operand()
	if err != nil {
		return nil, err
	}
	if n := p.peek(); n.kind == tokOp {
		return nil, p.errAt(n.pos, "chained comparisons are not supported; join them with and")
	}
	switch {
	case lcol && !rcol:
		return &qnode{op: t.text, column: lname, lits: []qlit{rlit}}, nil
	case rcol && !lcol:
		return &qnode{op: flipped[t.text], column: rname, lits: []qlit{llit}}, nil
	case lcol:
		return nil, p.errAt(start, "comparing two columns (%s, %s) is not supported", lname, rname)
	}
	return nil, p.errAt(start, "a comparison needs a column")
}

func (p *queryParser) list() ([]qlit, error) {
	open := p.next()
	if open.kind != tokPunct || open.text != "[" && open.text != "(" {
		return nil, p.errAt(open.pos, "expected a [list] of literals after in")
	}
	closeWith := "]"
	if open.text == "(" {
		closeWith = ")"
	}
	var lits []qlit
	for {
		t := p.next()
		switch t.kind {
		case tokNumber:
			lits = append(lits, qlit{isNum: true, num: t.num})
		case tokString:
			lits = append(lits, qlit{str: t.text})
		default:
			return nil, p.errAt(t.pos, "a list holds literals only, got %q", t.text)
		}
		sep := p.next()
		if sep.kind == tokPunct && sep.text == closeWith {
			return lits, nil
		}
		if sep.kind != tokPunct || sep.text != "," {
			return nil, p.errAt(sep.pos, "expected , or %s in the list", closeWith)
		}
	}
}

// columns appends the columns the query reads, each once, in order.
func (n *qnode) columns(out []string) []string {
	if n.column != "" && !contains(out, n.column) {
		out = append(out, n.column)
	}
	for _, k := range n.kids {
		out = k.columns(out)
	}
	return out
}

// bind sets each comparison's column position.
func (n *qnode) bind(pos map[string]int) {
	if n.column != "" {
		n.col = pos[n.column]
	}
	for _, k := range n.kids {
		k.bind(pos)
	}
}

// queryEval evaluates a bound query over chunks.
type queryEval struct {
	root *qnode
	buf  []byte
}

// eval reports whether row i of c passes n.
func (e *queryEval) eval(n *qnode, c *chunk, i int) (bool, error) {
	switch n.op {
	case "and", "or":
		for _, k := range n.kids {
			v, err := e.eval(k, c, i)
			if err != nil {
				return false, err
			}
			if v == (n.op == "or") {
				return v, nil // short-circuit
			}
		}
		return n.op == "and", nil
	case "not":
		v, err := e.eval(n.kids[0], c, i)
		return !v, err
	}
	col := &c.cols[n.col]
	negated := n.op == "!=" || n.op == "not in"
	if col.isNull(i) {
		return negated, nil
	}
	if n.op == "in" || n.op == "not in" {
		for _, l := range n.lits {
			eq, err := e.compare(col, c, n, i, l)
			if err != nil {
				return false, err
			}
			if eq == 0 {
				return !negated, nil
			}
		}
		return negated, nil
	}
	d, err := e.compare(col, c, n, i, n.lits[0])
	if err != nil || d == 2 { // a NaN compares false except with !=
		return negated, err
	}
	switch n.op {
	case "==":
		return d == 0, nil
	case "!=":
		return d != 0, nil
	case "<":
		return d < 0, nil
	case "<=":
		return d <= 0, nil
	case ">":
		return d > 0, nil
	}
	return d >= 0, nil // ">="
}

// compare returns the sign of value - literal; 2 means unordered (NaN, or
// unequal values of different kinds under == and in).
func (e *queryEval) compare(col *column, c *chunk, n *qnode, i int, l qlit) (int, error) {
	if l.isNum {
		v, null, err := numberAt(c, col, i, n.column)
		if err != nil {
			return 0, fmt.Errorf("filter query compares with the number %s: %w", l, err)
		}
		if null { // NaN
			return 2, nil
		}
		switch {
		case v < l.num:
			return -1, nil
		case v > l.num:
			return 1, nil
		}
		return 0, nil
	}
	if col.kind != kindString && n.op != "==" && n.op != "!=" && n.op != "in" && n.op != "not in" {
		return 0, c.errAt(n.column, i, "filter query orders a numeric column against the string %s", l)
	}
	e.buf = col.appendKey(e.buf[:0], i)
	return bytes.Compare(e.buf, []byte(l.str)), nil
}
