package preprocess

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

type plantedRow struct {
	rid, ts     int
	user, item  string
	click       int
	removedByQ  bool
	removedByFq bool
}

// writePlanted writes n rows, plus a chain of 21 more, over two CSV
// files: users and items drawn with skewed frequencies (a few heavy ones,
// many rare ones), and a chain (user c0, item d0), (c1, d0), (c1, d1), (c2,
// d1), ..., (c10, d10) in which, with both minimum frequencies 2, each
// round of filtering removes the ends exposed by the previous one, so that
// it takes several rounds to settle.
func writePlanted(t *testing.T, dir string, n int) ([]string, []plantedRow) {
	rng := rand.New(rand.NewPCG(3, 4))
	rows := make([]plantedRow, n, n+21)
	for r := range rows {
		u := int(40 * rng.Float64() * rng.Float64())
		i := int(25 * rng.Float64() * rng.Float64() * rng.Float64())
		rows[r] = plantedRow{rid: r, ts: 1000 + r%50, user: fmt.Sprint("u", u), item: fmt.Sprint("i", i), click: rng.IntN(2)}
	}
	add := func(u, i int) {
		r := len(rows)
		rows = append(rows, plantedRow{rid: r, ts: 1000 + r%50, user: fmt.Sprint("c", u), item: fmt.Sprint("d", i), click: r % 2})
	}
	add(0, 0)
	for k := 1; k <= 10; k++ {
		add(k, k-1)
		add(k, k)
	}
	var files []string
	for part, rg := range [][2]int{{0, n / 3}, {n / 3, len(rows)}} {
		var b strings.Builder
		b.WriteString("rid,ts,user,item,click\n")
		for _, r := range rows[rg[0]:rg[1]] {
			fmt.Fprintf(&b, "%d,%d,%s,%s,%d\n", r.rid, r.ts, r.user, r.item, r.click)
		}
		files = append(files, writeFile(t, dir, fmt.Sprintf("part%d.csv", part), b.String()))
	}
	return files, rows
}

// refFrequencyFilter is the rule as Merlin's script applies it to a data
// frame, written with maps over the kept rows: per round, drop the users
// outside their bounds, then (recounted) the items; stop after a round
// that drops nothing or after rounds rounds. It returns the kept rids, the
// rounds run and whether the last round dropped nothing.
func refFrequencyFilter(rows []plantedRow, minU, maxU, minI, maxI int, rounds int) (map[int]bool, int, bool) {
	kept := map[int]bool{}
	for _, r := range rows {
		kept[r.rid] = true
	}
	step := func(key func(plantedRow) string, lo, hi int) int {
		if lo == 0 && hi == 0 {
			return 0
		}
		count := map[string]int{}
		for _, r := range rows {
			if kept[r.rid] {
				count[key(r)]++
			}
		}
		dropped := 0
		for _, r := range rows {
			if c := count[key(r)]; kept[r.rid] && (c < lo || hi > 0 && c > hi) {
				delete(kept, r.rid)
				dropped++
			}
		}
		return dropped
	}
	for round := 1; round <= rounds; round++ {
		d := step(func(r plantedRow) string { return r.user }, minU, maxU)
		d += step(func(r plantedRow) string { return r.item }, minI, maxI)
		if d == 0 {
			return kept, round, true
		}
	}
	return kept, rounds, false
}

func filterSpec() Spec {
	return Spec{CSVHeader: true, UserID: "user", ItemID: "item", Continuous: []string{"rid"},
		BinaryTargets: []string{"click"}, ChunkRows: 64}
}

func TestFrequencyFilterRounds(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	files, rows := writePlanted(t, dir, n)
	for i, tc := range []struct {
		minU, maxU, minI, maxI, rounds int
	}{
		{minU: 40, rounds: 5},
		{minI: 60, rounds: 5},
		{minU: 30, minI: 80, rounds: 1},
		{minU: 30, minI: 80, rounds: 2},
		{minU: 30, minI: 80, rounds: 20},
		{minU: 20, maxU: 200, minI: 50, maxI: 400, rounds: 20},
		{maxU: 60, rounds: 5},
		{minU: 2, minI: 2, rounds: 2},
		{minU: 2, minI: 2, rounds: 20},
	} {
		name := fmt.Sprintf("users[%d,%d]_items[%d,%d]_rounds%d", tc.minU, tc.maxU, tc.minI, tc.maxI, tc.rounds)
		t.Run(name, func(t *testing.T) {
			wantKept, wantRounds, wantStable := refFrequencyFilter(rows, tc.minU, tc.maxU, tc.minI, tc.maxI, tc.rounds)
			require.NotEmpty(t, wantKept)
			require.Less(t, len(wantKept), len(rows), "the case removes something")
			spec := filterSpec()
			spec.MinUserFreq, spec.MaxUserFreq = int64(tc.minU), int64(tc.maxU)
			spec.MinItemFreq, spec.MaxItemFreq = int64(tc.minI), int64(tc.maxI)
			spec.FilterRounds = tc.rounds
			out := filepath.Join(dir, fmt.Sprint("out", i))
			rep, err := Run(spec, files, nil, out)
			require.NoError(t, err)
			train := readDataset(t, filepath.Join(out, "train"))
			assert.Equal(t, wantKept, ridSet(train))
			require.NotNil(t, rep.Filter)
			assert.Equal(t, FilterReport{Rows: int64(len(rows)), RemovedFreq: int64(len(rows) - len(wantKept)), Rounds: wantRounds,
				Stable: wantStable, RemainingRows: int64(len(wantKept))}, *rep.Filter)
			assert.EqualValues(t, len(wantKept), rep.FitRows, "fitted on the kept rows only")
		})
	}
	// The planted data needs more than one round to settle.
	_, r, stable := refFrequencyFilter(rows, 2, 0, 2, 0, 20)
	assert.Greater(t, r, 3)
	assert.True(t, stable)
	_, _, stable = refFrequencyFilter(rows, 2, 0, 2, 0, 2)
	assert.False(t, stable)
}

// TestFilterQueryThenFrequency: the query runs first, the frequency
// counts are taken over the rows it keeps, and the split shares
// (random_by_user) are taken of each user's remaining rows.
func TestFilterQueryThenFrequency(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	files, rows := writePlanted(t, dir, n)
	var afterQuery []plantedRow
	for _, r := range rows {
		if r.click == 1 || r.ts < 1010 {
			afterQuery = append(afterQuery, r)
		}
	}
	wantKept, _, _ := refFrequencyFilter(afterQuery, 15, 0, 0, 0, 5)
	spec := filterSpec()
	spec.FilterQuery = "click == 1 or ts < 1010"
	spec.MinUserFreq = 15
	spec.FilterRounds = 5
	spec.SplitStrategy, spec.EvalPerc, spec.Seed = SplitRandomByUser, 0.3, 9
	out := filepath.Join(dir, "out")
	rep, err := Run(spec, files, nil, out)
	require.NoError(t, err)
	train, eval := readDataset(t, filepath.Join(out, "train")), readDataset(t, filepath.Join(out, "eval"))
	got := ridSet(train)
	for r := range ridSet(eval) {
		require.False(t, got[r], "row %d on both sides", r)
		got[r] = true
	}
	assert.Equal(t, wantKept, got)
	assert.EqualValues(t, len(rows)-len(afterQuery), rep.Filter.RemovedQuery)
	assert.EqualValues(t, len(afterQuery)-len(wantKept), rep.Filter.RemovedFreq)
	// Each user sends its share of its remaining rows to eval.
	perUser, evalPerUser := map[string]int64{}, map[string]int64{}
	byRid := map[int]plantedRow{}
	for _, r := range rows {
		byRid[r.rid] = r
	}
	for r := range wantKept {
		perUser[byRid[r].user]++
	}
	for r := range ridSet(eval) {
		evalPerUser[byRid[r].user]++
	}
	for u, c := range perUser {
		assert.Equal(t, userEvalRows(c, 0.3), evalPerUser[u], "user %s with %d rows", u, c)
	}
}

func TestFilterRemovesEverything(t *testing.T) {
	dir := t.TempDir()
	files, rows := writePlanted(t, dir, 200)
	spec := filterSpec()
	spec.FilterQuery = "rid < 0"
	_, err := Run(spec, files, nil, filepath.Join(dir, "out"))
	require.ErrorIs(t, err, ErrEmptyInput)
	assert.Contains(t, err.Error(), "no training rows")
	assert.Contains(t, err.Error(), fmt.Sprintf("(%d removed by the query, 0 by frequency)", len(rows)))
}

// TestTemporalSplit checks the boundary: a row at the cut goes to eval,
// the row one tick before it to train; timestamps come as CSV text and as
// Parquet integers.
func TestTemporalSplit(t *testing.T) {
	dir := t.TempDir()
	files, rows := writePlanted(t, dir, 500)
	const cut = 1030
	wantTrain, wantEval := map[int]bool{}, map[int]bool{}
	for _, r := range rows {
		if r.ts < cut {
			wantTrain[r.rid] = true
		} else {
			wantEval[r.rid] = true
		}
	}
	spec := filterSpec()
	spec.SplitStrategy, spec.TimestampFeature, spec.SplitTemporalTimestamp = SplitTemporal, "ts", cut
	out := filepath.Join(dir, "out")
	rep, err := Run(spec, files, nil, out)
	require.NoError(t, err)
	assert.Equal(t, wantTrain, ridSet(readDataset(t, filepath.Join(out, "train"))))
	assert.Equal(t, wantEval, ridSet(readDataset(t, filepath.Join(out, "eval"))))
	assert.EqualValues(t, len(wantTrain), rep.FitRows)
	assert.Nil(t, rep.Filter)

	// Parquet int64 timestamps, the timestamp also a tagged feature.
	pq := filepath.Join(dir, "ts.parquet")
	ts := []any{5, 9, 10, 11, 10, 3}
	writeParquet(t, pq, 4,
		parquetColumn{name: "rid", typ: arrow.PrimitiveTypes.Int64, vals: []any{0, 1, 2, 3, 4, 5}},
		parquetColumn{name: "ts", typ: arrow.PrimitiveTypes.Int64, vals: ts},
		parquetColumn{name: "click", typ: arrow.PrimitiveTypes.Int64, vals: []any{0, 1, 0, 1, 1, 0}})
	spec = Spec{Continuous: []string{"rid", "ts"}, BinaryTargets: []string{"click"}, SplitStrategy: SplitTemporal,
		TimestampFeature: "ts", SplitTemporalTimestamp: 10}
	out = filepath.Join(dir, "outpq")
	_, err = Run(spec, []string{pq}, nil, out)
	require.NoError(t, err)
	assert.Equal(t, map[int]bool{0: true, 1: true, 5: true}, ridSet(readDataset(t, filepath.Join(out, "train"))))
	assert.Equal(t, map[int]bool{2: true, 3: true, 4: true}, ridSet(readDataset(t, filepath.Join(out, "eval"))))
	s, err := schema.Load(filepath.Join(out, "train"))
	require.NoError(t, err)
	f := s.Feature("ts")
	require.NotNil(t, f)
	assert.True(t, f.HasTag(schema.TagTime), "tags %v", f.Tags)
}

func TestTemporalSplitBadTimestamps(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ ts, want string }{
		{"", `column "ts", line 3: the timestamp is null`},
		{"12.5", `column "ts", line 3: timestamp 12.5 is not an integer`},
		{"noon", `column "ts", line 3: timestamp "noon" is not a number`},
	} {
		p := writeFile(t, dir, "bad.csv", "rid,ts,click\n0,5,1\n1,"+tc.ts+",0\n2,20,1\n")
		spec := Spec{CSVHeader: true, Continuous: []string{"rid"}, BinaryTargets: []string{"click"},
			SplitStrategy: SplitTemporal, TimestampFeature: "ts", SplitTemporalTimestamp: 10}
		_, err := Run(spec, []string{p}, nil, filepath.Join(dir, "out"))
		require.Error(t, err, tc.ts)
		assert.Contains(t, err.Error(), tc.want)
		assert.Contains(t, err.Error(), "bad.csv")
	}
}

func TestSessionAndTimeTags(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "s.csv", "sess,ts,click\na,1,1\nb,2,0\na,3,1\n")
	spec := Spec{CSVHeader: true, Categorical: []string{"sess", "ts"}, BinaryTargets: []string{"click"},
		SessionIDFeature: "sess", TimestampFeature: "ts"}
	out := filepath.Join(dir, "out")
	_, err := Run(spec, []string{p}, nil, out)
	require.NoError(t, err)
	s, err := schema.Load(filepath.Join(out, "train"))
	require.NoError(t, err)
	var tags []string
	for _, name := range []string{"sess", "ts"} {
		for _, tg := range s.Feature(name).Tags {
			tags = append(tags, name+":"+string(tg))
		}
	}
	sort.Strings(tags)
	assert.Equal(t, []string{"sess:categorical", "sess:id", "sess:session", "sess:session_id", "ts:categorical", "ts:time"}, tags)
}

func TestFilterQueryUnknownColumn(t *testing.T) {
	dir := t.TempDir()
	files, _ := writePlanted(t, dir, 50)
	spec := filterSpec()
	spec.FilterQuery = "nope > 1"
	_, err := Run(spec, files, nil, filepath.Join(dir, "out"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"nope"`)
	assert.Contains(t, err.Error(), "part0.csv")
}

// The query filters the eval and test inputs too, as Merlin's script
// applies it to every input it reads; the frequency bounds apply to the
// training rows only.
func TestFilterQueryOnEvalAndTest(t *testing.T) {
	dir := t.TempDir()
	train := writeFile(t, dir, "train.csv", "user,item,price,click\nu1,a,1,1\nu1,b,5,0\nu2,a,7,1\nu2,b,2,0\nu2,c,9,1\n")
	eval := writeFile(t, dir, "eval.csv", "user,item,price,click\nu1,a,3,1\nu3,z,8,0\nu2,b,4,1\n")
	test := writeFile(t, dir, "test.csv", "user,item,price\nu1,a,6\nu1,b,1\n")
	spec := Spec{CSVHeader: true, UserID: "user", ItemID: "item", Continuous: []string{"price"}, BinaryTargets: []string{"click"},
		FilterQuery: "price >= 3", MinUserFreq: 2, FilterRounds: 5}
	out := filepath.Join(dir, "out")
	rep, err := RunInputs(spec, Inputs{Train: []string{train}, Eval: []string{eval}, Test: []string{test}}, out)
	require.NoError(t, err)
	// train: price >= 3 keeps u1/5, u2/7, u2/9; u1 then has 1 row (< 2)
	assert.EqualValues(t, 2, rep.Train.Rows)
	assert.Equal(t, FilterReport{Rows: 5, RemovedQuery: 2, RemovedFreq: 1, Rounds: 2, Stable: true, RemainingRows: 2}, *rep.Filter)
	assert.EqualValues(t, 3, rep.Eval.Rows, "eval: the query keeps all three; no frequency filter")
	assert.EqualValues(t, 1, rep.Test.Rows)
}

// Rows with a null id are removed by that id's frequency filter: Merlin's
// value counts leave nulls out and its merge drops their rows.
func TestFrequencyFilterNullIDs(t *testing.T) {
	dir := t.TempDir()
	train := writeFile(t, dir, "train.csv", "user,item,click\nu1,a,1\n,a,0\nu1,b,1\n,b,0\nu2,a,1\n")
	spec := Spec{CSVHeader: true, UserID: "user", ItemID: "item", BinaryTargets: []string{"click"}, MinItemFreq: 1}
	rep, err := Run(spec, []string{train}, nil, filepath.Join(dir, "out"))
	require.NoError(t, err)
	assert.EqualValues(t, 5, rep.Train.Rows, "the user filter is off: null users stay")
	spec.MinItemFreq, spec.MinUserFreq = 0, 1
	rep, err = Run(spec, []string{train}, nil, filepath.Join(dir, "out2"))
	require.NoError(t, err)
	assert.EqualValues(t, 3, rep.Train.Rows)
	assert.EqualValues(t, 2, rep.Filter.RemovedFreq)
}
