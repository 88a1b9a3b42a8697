package preprocess

import (
	"fmt"
	"math/big"
	"math/rand"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refUserEvalRows counts the k in 1..n whose cumulative share k/n is at
// most perc, literally as Merlin's script compares them.
func refUserEvalRows(n int, perc float64) int {
	e := 0
	for k := 1; k <= n; k++ {
		if float64(k)/float64(n) <= perc {
			e++
		}
	}
	return e
}

// refByUserSplit applies the documented random_by_user rule to rows whose
// users are given in input order, with big-integer arithmetic.
func refByUserSplit(seed int64, users []string, perc float64) []bool {
	n := map[string]int{}
	for _, u := range users {
		n[u]++
	}
	seen, sent := map[string]int{}, map[string]int{}
	two64 := new(big.Int).Lsh(big.NewInt(1), 64)
	eval := make([]bool, len(users))
	for r, u := range users {
		h := refSplitmix(uint64(seed) + uint64(r+1)*0x9e3779b97f4a7c15)
		j := new(big.Int).Mul(new(big.Int).SetUint64(h), big.NewInt(int64(n[u]-seen[u])))
		j.Div(j, two64)
		eval[r] = j.Cmp(big.NewInt(int64(refUserEvalRows(n[u], perc)-sent[u]))) < 0
		seen[u]++
		if eval[r] {
			sent[u]++
		}
	}
	return eval
}

func TestUserEvalRows(t *testing.T) {
	cases := []struct {
		n    int64
		perc float64
		want int64
	}{
		{1, 0.25, 0}, {1, 0.99, 0}, {2, 0.5, 1}, {3, 0.25, 0}, {4, 0.25, 1}, {7, 0.25, 1}, {8, 0.25, 2},
		{4, 0.2, 0}, {5, 0.2, 1}, {9, 0.3, 2}, {10, 0.3, 3}, {20, 0.3, 6}, {10, 0.7, 7}, {3, 1.0 / 3, 1},
		{1000, 0.999, 999}, {1000, 0.001, 1}, {999, 0.001, 0}, {1_000_000_000_000, 0.1, 100_000_000_000},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, userEvalRows(tc.n, tc.perc), "n=%d perc=%v", tc.n, tc.perc)
	}
	for _, perc := range []float64{0.01, 0.07, 0.1, 0.123456, 0.2, 0.3, 1.0 / 3, 0.5, 0.6, 0.7, 0.9, 0.99, 1 - 1e-16} {
		for n := 1; n <= 400; n++ {
			require.Equal(t, int64(refUserEvalRows(n, perc)), userEvalRows(int64(n), perc), "n=%d perc=%v", n, perc)
		}
	}
}

// byUserRows returns the user of each row, in input order: user k (0..39)
// has k+1 rows, and 6 rows have a null user (""), shuffled together.
func byUserRows() []string {
	var users []string
	for k := 0; k < 40; k++ {
		for j := 0; j <= k; j++ {
			users = append(users, fmt.Sprintf("%d", 1000+k))
		}
	}
	for j := 0; j < 6; j++ {
		users = append(users, "")
	}
	rand.New(rand.NewSource(1)).Shuffle(len(users), func(i, j int) { users[i], users[j] = users[j], users[i] })
	return users
}

// byUserX is the value of column x in row r, or false for a null.
func byUserX(r int) (float64, bool) { return float64(r * 37 % 101), r%9 != 0 }

// writeByUserData writes the rows of users over two files: CSV with string
// user ids "u<id>", or Parquet with int64 ids. Row r has rid r.
func writeByUserData(t *testing.T, dir, format string, users []string) []string {
	var files []string
	half := len(users) / 2
	for part, rng := range [][2]int{{0, half}, {half, len(users)}} {
		if format == FormatCSV {
			var b strings.Builder
			b.WriteString("rid,user,x,click\n")
			for r := rng[0]; r < rng[1]; r++ {
				u := users[r]
				if u != "" {
					u = "u" + u
				}
				x := ""
				if v, ok := byUserX(r); ok {
					x = fmt.Sprint(v)
				}
				fmt.Fprintf(&b, "%d,%s,%s,%d\n", r, u, x, r%2)
			}
			files = append(files, writeFile(t, dir, fmt.Sprintf("part%d.csv", part), b.String()))
			continue
		}
		var rid, user, x, click []any
		for r := rng[0]; r < rng[1]; r++ {
			rid = append(rid, r)
			if users[r] == "" {
				user = append(user, nil)
			} else {
				var id int
				_, err := fmt.Sscan(users[r], &id)
				require.NoError(t, err)
				user = append(user, id)
			}
			if v, ok := byUserX(r); ok {
				x = append(x, v)
			} else {
				x = append(x, nil)
			}
			click = append(click, r%2)
		}
		p := filepath.Join(dir, fmt.Sprintf("part%d.parquet", part))
		writeParquet(t, p, 50,
			parquetColumn{name: "rid", typ: arrow.PrimitiveTypes.Int64, vals: rid},
			parquetColumn{name: "user", typ: arrow.PrimitiveTypes.Int64, vals: user},
			parquetColumn{name: "x", typ: arrow.PrimitiveTypes.Float64, vals: x},
			parquetColumn{name: "click", typ: arrow.PrimitiveTypes.Int64, vals: click})
		files = append(files, p)
	}
	return files
}

// TestSplitRandomByUser checks Merlin's per-user split end to end against
// the reference rule, and the properties that define it.
func TestSplitRandomByUser(t *testing.T) {
	savedCollect, savedKeep := medianCollectMax, medianKeepMax
	t.Cleanup(func() { medianCollectMax, medianKeepMax = savedCollect, savedKeep })
	users := byUserRows()
	nrows := len(users)
	perUser := map[string]int{}
	for _, u := range users {
		perUser[u]++
	}
	cases := []struct {
		name      string
		format    string
		perc      float64
		seed      int64
		chunkRows int
		// the median of x is found by refinement passes, which must see the
		// same train side as the fit pass
		medianPasses bool
	}{
		{"csv quarter", FormatCSV, 0.25, 7, 1000, false},
		{"csv quarter small chunks", FormatCSV, 0.25, 7, 7, true},
		{"csv other seed", FormatCSV, 0.25, 8, 64, false},
		{"parquet int ids", FormatParquet, 0.3, 7, 33, true},
	}
	got := map[string][]int{} // eval rids per case
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			medianKeepMax, medianCollectMax = savedKeep, savedCollect
			if tc.medianPasses {
				medianKeepMax, medianCollectMax = 0, 0 // histogram passes down to all 64 bits
			}
			dir := t.TempDir()
			files := writeByUserData(t, dir, tc.format, users)
			spec := Spec{CSVHeader: true, UserID: "user", Continuous: []string{"rid", "x"}, ContinuousFillNA: "median",
				BinaryTargets: []string{"click"}, SplitStrategy: SplitRandomByUser, EvalPerc: tc.perc, Seed: tc.seed,
				ChunkRows: tc.chunkRows}
			var stages []string
			spec.Progress = func(stage string, _ int64) {
				if len(stages) == 0 || stages[len(stages)-1] != stage {
					stages = append(stages, stage)
				}
			}
			out := filepath.Join(dir, "out")
			rep, err := Run(spec, files, nil, out)
			require.NoError(t, err)
			assert.Equal(t, "split", stages[0])
			if tc.medianPasses {
				assert.Contains(t, stages, "median")
			}
			train, eval := readDataset(t, filepath.Join(out, "train")), readDataset(t, filepath.Join(out, "eval"))

			// The eval rows are exactly those of the reference rule.
			want := refByUserSplit(tc.seed, users, tc.perc)
			var wantEval, wantTrain []int
			for r, e := range want {
				if e {
					wantEval = append(wantEval, r)
				} else {
					wantTrain = append(wantTrain, r)
				}
			}
			gotEval, gotTrain := ridList(eval), ridList(train)
			require.Equal(t, wantEval, gotEval)
			require.Equal(t, wantTrain, gotTrain)
			got[tc.name] = gotEval

			// Each user sends floor(perc*n) of its n rows to eval (worked out
			// by hand for these fractions) and keeps at least one for train.
			evalOf, trainOf := map[string]int{}, map[string]int{}
			for _, r := range gotEval {
				evalOf[users[r]]++
			}
			for _, r := range gotTrain {
				trainOf[users[r]]++
			}
			both := 0
			for u, n := range perUser {
				wantE := n / 4
				if tc.perc == 0.3 {
					wantE = 3 * n / 10
				}
				assert.Equal(t, wantE, evalOf[u], "user %q with %d rows", u, n)
				assert.Equal(t, n-wantE, trainOf[u], "user %q with %d rows", u, n)
				assert.Positive(t, trainOf[u], "user %q has no train row", u)
				if wantE > 0 {
					both++
				}
			}
			// Users with 1-3 rows are on the train side only (n/4 and
			// 3n/10 are 0); those with 4 rows or more are on both sides.
			assert.Equal(t, 1, trainOf["1000"], "a single-row user stays in train")
			assert.Zero(t, evalOf["1000"])
			assert.Equal(t, 37+1, both, "users with 4..40 rows, and the 6 null-user rows")

			// Every eval user was fitted: no eval id is out of vocabulary.
			assert.EqualValues(t, 0, rep.Eval.OOVRows["user"])
			assert.EqualValues(t, evalOf[""], rep.Eval.NullRows["user"])
			w, err := LoadWorkflow(rep.WorkflowPath)
			require.NoError(t, err)
			assert.Len(t, w.Categ("user").Vocab, 40)
			assert.EqualValues(t, len(gotTrain), w.FitRows)
			assert.EqualValues(t, len(gotTrain), rep.Train.Rows)
			assert.EqualValues(t, len(gotEval), rep.Eval.Rows)

			// The median fill is the median of x over the train side only.
			var xs []float64
			for _, r := range gotTrain {
				if v, ok := byUserX(r); ok {
					xs = append(xs, v)
				}
			}
			sort.Float64s(xs)
			med := (xs[(len(xs)-1)/2] + xs[len(xs)/2]) / 2
			assert.Equal(t, med, w.Cont("x").FillValue)
			for i, r := range gotEval {
				if _, ok := byUserX(r); !ok {
					assert.Equal(t, float64(float32(med)), eval.cols["x"][i], "eval row %d", r)
				}
			}
			assert.Equal(t, nrows, train.rows+eval.rows)
		})
	}
	// Same seed, same split whatever the chunking; another seed, another one.
	assert.Equal(t, got["csv quarter"], got["csv quarter small chunks"])
	assert.NotEqual(t, got["csv quarter"], got["csv other seed"])
}

// ridList returns the rid column of ds as ints, in row order.
func ridList(ds dataset) []int {
	var out []int
	for _, v := range ds.cols["rid"] {
		out = append(out, int(v))
	}
	return out
}

// stringChunk builds a chunk of user ids starting at global row first.
func stringChunk(first int64, users ...string) *chunk {
	return &chunk{file: "users.parquet", n: len(users), firstRow: first, globalRow: first,
		cols: []column{{kind: kindString, str: users}}}
}

// TestSplitByUserUniform checks that the eval rows of a user are a
// uniformly random subset of its rows over seeds, as Merlin's shuffle
// makes them, with exactly the user's share each time.
func TestSplitByUserUniform(t *testing.T) {
	rows := []string{"a", "b", "a", "a", "b", "a", "b", "a"} // a: 5 rows, 2 to eval; b: 3 rows, 1
	chunks := []*chunk{stringChunk(0, rows[:5]...), stringChunk(5, rows[5:]...)}
	s := newSplitter(&Spec{SplitStrategy: SplitRandomByUser, EvalPerc: 0.4, UserID: "user"}, nil)
	s.startCount()
	for _, c := range chunks {
		require.NoError(t, s.countChunk(c, 0))
	}
	s.finishCount()

	const seeds = 3000
	subsets := map[string]int{} // eval positions of a, then of b
	var eval []bool
	for seed := int64(0); seed < seeds; seed++ {
		s.seed = uint64(seed)
		s.beginPass()
		var ofA, ofB []int
		var flags []bool
		for _, c := range chunks {
			var err error
			eval, err = evalMaskOf(s, c)
			require.NoError(t, err)
			flags = append(flags, eval...)
		}
		require.NoError(t, s.endPass())
		na, nb := 0, 0
		for r, e := range flags {
			if rows[r] == "a" {
				if e {
					ofA = append(ofA, na)
				}
				na++
			} else {
				if e {
					ofB = append(ofB, nb)
				}
				nb++
			}
		}
		require.Len(t, ofA, 2, "seed %d", seed)
		require.Len(t, ofB, 1, "seed %d", seed)
		require.Equal(t, refByUserSplit(seed, rows, 0.4), flags, "seed %d", seed)
		subsets[fmt.Sprint(ofA, ofB)]++
	}
	// 10 subsets of a times 3 of b, each with probability 1/30.
	require.Len(t, subsets, 30)
	for k, n := range subsets {
		assert.InDelta(t, seeds/30.0, float64(n), 4*30, "subset %s", k) // sd is about 9.8
	}
}

// TestSplitByUserPassChecks checks that a pass which does not match the
// counting pass is an error, not a wrong split.
func TestSplitByUserPassChecks(t *testing.T) {
	counted := []*chunk{stringChunk(0, "a", "b", "a"), stringChunk(3, "b", "a")}
	setup := func() *splitter {
		s := newSplitter(&Spec{SplitStrategy: SplitRandomByUser, EvalPerc: 0.5, UserID: "user"}, nil)
		s.startCount()
		for _, c := range counted {
			require.NoError(t, s.countChunk(c, 0))
		}
		s.finishCount()
		s.beginPass()
		return s
	}

	s := setup()
	_, err := evalMaskOf(s, counted[1])
	require.Error(t, err)
	assert.Contains(t, err.Error(), "out of order")

	s = setup()
	_, err = evalMaskOf(s, stringChunk(0, "a", "c"))
	require.Error(t, err)
	var ie *InputError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, "user", ie.Column)
	assert.EqualValues(t, 1, ie.Row)
	assert.Contains(t, err.Error(), `user "c" has more rows than in the first pass`)

	s = setup()
	_, err = evalMaskOf(s, stringChunk(0, "b", "b", "b"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `user "b" has more rows`)

	s = setup()
	_, err = evalMaskOf(s, counted[0])
	require.NoError(t, err)
	err = s.endPass()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "have 3 rows now but had 5")

	// A full pass, twice: beginPass makes the second give the same sides.
	s = setup()
	var first []bool
	for _, c := range counted {
		m, err := evalMaskOf(s, c)
		require.NoError(t, err)
		first = append(first, m...)
	}
	require.NoError(t, s.endPass())
	s.beginPass()
	var second []bool
	for _, c := range counted {
		m, err := evalMaskOf(s, c)
		require.NoError(t, err)
		second = append(second, m...)
	}
	require.NoError(t, s.endPass())
	assert.Equal(t, first, second)
	assert.Equal(t, refByUserSplit(0, []string{"a", "b", "a", "b", "a"}, 0.5), first)
}

// TestSplitByUserIDForms checks that an integer id and its decimal string
// are one user, and a null id is the user "".
func TestSplitByUserIDForms(t *testing.T) {
	s := newSplitter(&Spec{SplitStrategy: SplitRandomByUser, EvalPerc: 0.5, UserID: "user"}, nil)
	s.startCount()
	require.NoError(t, s.countChunk(stringChunk(0, "7", "", "7"), 0))
	ints := &chunk{n: 3, globalRow: 3, cols: []column{{kind: kindInt, i64: []int64{7, 0, 8}, null: []bool{false, true, false}, hasNull: true}}}
	require.NoError(t, s.countChunk(ints, 0))
	s.finishCount()
	require.Len(t, s.per, 3)
	assert.Equal(t, userRows{rows: 3, eval: 1}, s.per[s.users["7"]])
	assert.Equal(t, userRows{rows: 2, eval: 1}, s.per[s.users[""]])
	assert.Equal(t, userRows{rows: 1, eval: 0}, s.per[s.users["8"]])
}

// evalMaskOf reports which rows of c the split sends to eval.
func evalMaskOf(s *splitter, c *chunk) ([]bool, error) {
	side, err := s.sides(c, nil)
	if err != nil {
		return nil, err
	}
	eval := make([]bool, len(side))
	for i, v := range side {
		eval[i] = v == sideEval
	}
	return eval, nil
}
