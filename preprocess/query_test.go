package preprocess

import (
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// queryChunk is a chunk of five rows with an integer column "n", a float
// column "x" (row 3 is NaN), a string column "s", a CSV-style string
// column "t" holding numbers, and nulls at row 4 of every column.
func queryChunk() *chunk {
	null := []bool{false, false, false, false, true}
	return &chunk{file: "q.csv", n: 5, cols: []column{
		{kind: kindInt, i64: []int64{1, 2, 3, 4, 0}, null: null, hasNull: true},
		{kind: kindFloat, f64: []float64{-1.5, 0, 2.5, math.NaN(), 0}, null: null, hasNull: true},
		{kind: kindString, str: []string{"a", "b", "c", "it's", ""}, null: null, hasNull: true},
		{kind: kindString, str: []string{"10", "20", "3e1", "40", ""}, null: null, hasNull: true},
	}}
}

var queryCols = map[string]int{"n": 0, "x": 1, "s": 2, "t": 3, "my col": 0}

// runQuery returns the rows of queryChunk that q keeps.
func runQuery(t *testing.T, q string) ([]int, error) {
	t.Helper()
	root, err := parseQuery(q)
	if err != nil {
		return nil, err
	}
	root.bind(queryCols)
	e := &queryEval{root: root}
	c := queryChunk()
	var kept []int
	for i := 0; i < c.n; i++ {
		ok, err := e.eval(root, c, i)
		if err != nil {
			return nil, err
		}
		if ok {
			kept = append(kept, i)
		}
	}
	return kept, nil
}

// The expected rows come from reading queryChunk by hand, as pandas'
// DataFrame.query would select them (null/NaN compare false, except !=).
func TestFilterQuery(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want []int
	}{
		{"n > 2", []int{2, 3}},
		{"n >= 2", []int{1, 2, 3}},
		{"n == 3", []int{2}},
		{"n != 3", []int{0, 1, 3, 4}},
		{"3 < n", []int{3}},
		{"2 >= n", []int{0, 1}},
		{"x < 0", []int{0}},
		{"x != 0", []int{0, 2, 3, 4}},
		{"x >= -1.5", []int{0, 1, 2}},
		{"x > 1e0", []int{2}},
		{"s == 'b'", []int{1}},
		{`s == "it's"`, []int{3}},
		{`s == 'it\'s'`, []int{3}},
		{"s < 'c'", []int{0, 1}},
		{"s in ['a', 'c']", []int{0, 2}},
		{"s not in ('a', 'c')", []int{1, 3, 4}},
		{"n in [1, 4, 9]", []int{0, 3}},
		{"n == '2'", []int{1}},
		{"t > 15", []int{1, 2, 3}},
		{"t == 30", []int{2}},
		{"n > 1 and n < 4", []int{1, 2}},
		{"n > 1 & n < 4", []int{1, 2}},
		{"n == 1 or s == 'c'", []int{0, 2}},
		{"n == 1 | s == 'c'", []int{0, 2}},
		{"not n > 2", []int{0, 1, 4}},
		{"~(n > 2)", []int{0, 1, 4}},
		{"n == 1 or n == 2 and s == 'a'", []int{0}}, // and binds tighter
		{"(n == 1 or n == 2) and s == 'b'", []int{1}},
		{"not (n in [1, 2] or x < 0)", []int{2, 3, 4}},
		{"`my col` <= 2", []int{0, 1}},
		{"  n>3  ", []int{3}},
	} {
		t.Run(tc.q, func(t *testing.T) {
			got, err := runQuery(t, tc.q)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFilterQueryRefused(t *testing.T) {
	for _, tc := range []struct {
		q, msg string
		offset int
	}{
		{"", "empty query", 0},
		{"n + 1 > 2", `arithmetic (+) is not supported`, 2},
		{"n * 2 > 2", `arithmetic (*) is not supported`, 2},
		{"n > 1e999", `"1e999" is not a number`, 4},
		{"n > -x", `unexpected "-"`, 4},
		{"n > m", `comparing two columns (n, m) is not supported`, 0},
		{"1 < 2", `a comparison needs a column`, 0},
		{"1 < n < 3", `chained comparisons are not supported; join them with and`, 6},
		{"n = 3", `"=" is not a comparison operator`, 2},
		{"n > @limit", `@variables are not supported`, 4},
		{"s.str.contains('a')", `attribute access (.) is not supported`, 1},
		{"abs(n) > 1", `function calls and indexing are not supported`, 3},
		{"n > 1 and", `unexpected end of query`, 9},
		{"(n > 1", `missing )`, 6},
		{"n > 1)", `unexpected ")"`, 5},
		{"s == 'a", `unterminated string`, 5},
		{"n in [1, m]", `a list holds literals only, got "m"`, 9},
		{"n in 3", `expected a [list] of literals after in`, 5},
		{"n not 3", `expected "in" after "not"`, 6},
		{"flag == True", `the literal True is not supported; compare with a number or a quoted string`, 8},
		{"n > 1 xor n < 3", `unexpected "xor"`, 6},
	} {
		t.Run(tc.q, func(t *testing.T) {
			_, err := parseQuery(tc.q)
			var qe *QueryError
			require.ErrorAs(t, err, &qe)
			assert.Equal(t, tc.msg, qe.Msg)
			assert.Equal(t, tc.offset, qe.Offset)
			assert.Contains(t, err.Error(), "supported: comparisons of a column with a literal")
		})
	}
}

// Data that does not fit the query is an error naming the file, column
// and row, not a silently dropped row.
func TestFilterQueryDataErrors(t *testing.T) {
	for _, tc := range []struct{ q, want string }{
		{"s > 1", `filter query compares with the number 1: q.csv: column "s", row 0: value "a" is not a number`},
		{"n < 'b'", `q.csv: column "n", row 0: filter query orders a numeric column against the string "b"`},
	} {
		_, err := runQuery(t, tc.q)
		var ie *InputError
		require.True(t, errors.As(err, &ie), "%v", err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestFilterQueryColumns(t *testing.T) {
	root, err := parseQuery("(b > 1 or a == 'x') and not b in [1] and `c d` < 3")
	require.NoError(t, err)
	assert.Equal(t, []string{"b", "a", "c d"}, root.columns(nil))
}
