package mtl

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/readlimit"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/mtl/safetensors"
)

// Per-shard checkpoints of a model whose tables are sharded by rows
// (NewShardedModel). Beside the files of a one-process checkpoint, whose
// model.safetensors and optimizer.safetensors then hold the dense tensors
// only, the folder holds
//
//	shards.json                        the manifest (shardManifest)
//	shard-00000-of-00003.safetensors   rank 0's rows of every table and of their optimizer state
//	shard-00001-of-00003.safetensors   rank 1's, ...
//
// and config.json says format version 3 (shardedCheckpointVersion), which
// builds without this reader refuse by its number. Shard r of N holds, for
// every table tensor, the rows id mod N == r at local row id div N, as
// rank r holds them in memory.
const (
	manifestFile = "shards.json"
	// ShardManifestFormat is the format of shards.json and of the shard
	// files' metadata.
	ShardManifestFormat  = "mtlrank-shards"
	shardManifestVersion = 1
	// shardedCheckpointVersion is config.json's format version of a
	// per-shard checkpoint (the one-process checkpoint stays at
	// CheckpointFormatVersion).
	shardedCheckpointVersion = 3
	// shardRule says, in the manifest, how ids map to shards.
	shardRule = "shard r of ranks holds the rows id mod ranks == r at local row id div ranks"
)

// shardManifest is the content of shards.json.
type shardManifest struct {
	Format        string `json:"format"`
	FormatVersion int    `json:"format_version"`
	// SaveID is drawn at random for every save; the shard files carry it
	// too, so that files of two saves are told apart.
	SaveID   string `json:"save_id"`
	Ranks    int    `json:"ranks"`
	Sharding string `json:"sharding"`
	Rule     string `json:"rule"`
	// Step and Epoch are the training position (state.json's).
	Step   int             `json:"step"`
	Epoch  int             `json:"epoch"`
	Tables []manifestTable `json:"tables"`
	Shards []manifestShard `json:"shards"`
}

// manifestTable is one embedding table: its global vocabulary and width,
// and the tensors every shard file holds for it (the table and its
// optimizer state), [rows of the shard, dim] each.
type manifestTable struct {
	Name    string   `json:"name"`
	Rows    int      `json:"rows"`
	Dim     int      `json:"dim"`
	Tensors []string `json:"tensors"`
}

// manifestShard is one shard file.
type manifestShard struct {
	Rank   int    `json:"rank"`
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// shardFileName is the file of shard rank of ranks.
func shardFileName(rank, ranks int) string {
	return fmt.Sprintf("shard-%05d-of-%05d.safetensors", rank, ranks)
}

// shardFilePattern matches shardFileName's names.
var shardFilePattern = regexp.MustCompile(`^shard-[0-9]{5,}-of-[0-9]{5,}\.safetensors$`)

// isCheckpointFile reports whether name is a file a save writes (the
// others in a checkpoint folder are the user's).
func isCheckpointFile(name string) bool {
	return slices.Contains(checkpointFiles, name) || name == manifestFile || shardFilePattern.MatchString(name)
}

// tableTensors splits named into the tensors of embedding tables (a
// table or its optimizer state) and the others.
func (m *Model) tableTensors(named []NamedTensor) (tables, dense []NamedTensor) {
	for _, nt := range named {
		if _, ok := m.tableOf(nt.Name); ok {
			tables = append(tables, nt)
		} else {
			dense = append(dense, nt)
		}
	}
	return tables, dense
}

// manifestTables lists the model's tables and, for each, the table's
// tensors of params and opt in that order.
func (m *Model) manifestTables() []manifestTable {
	var out []manifestTable
	opt := m.OptimizerState()
	for i, p := range m.params {
		if !p.Sparse {
			continue
		}
		tab := m.input.Tables[i]
		mt := manifestTable{Name: p.Name, Rows: tab.Rows, Dim: tab.Dim, Tensors: []string{p.Name}}
		for _, nt := range opt {
			if strings.HasPrefix(nt.Name, p.Name+"/") {
				mt.Tensors = append(mt.Tensors, nt.Name)
			}
		}
		out = append(out, mt)
	}
	return out
}

// shardMeta is the metadata of a shard file.
func shardMeta(saveID string, rank, ranks, step int) map[string]string {
	return map[string]string{
		"format": ShardManifestFormat, "save_id": saveID,
		"rank": strconv.Itoa(rank), "ranks": strconv.Itoa(ranks), "step": strconv.Itoa(step),
	}
}

// testShardWriteFault, set by tests, fails a rank's shard write.
var testShardWriteFault func(rank int) error

// writeShard writes the rank's rows of every table and table optimizer
// tensor into the folder tmp and returns the file's manifest entry. It
// streams one tensor at a time through the host (1/N of a table) and a
// buffer of 1 MB, never a full table.
func (m *Model) writeShard(tmp, saveID string, step int) (manifestShard, error) {
	rank, ranks := m.shard.Rank, m.shard.Size
	if testShardWriteFault != nil {
		if err := testShardWriteFault(rank); err != nil {
			return manifestShard{}, err
		}
	}
	tables, _ := m.tableTensors(append(m.Params(), m.OptimizerState()...))
	specs := make([]safetensors.Tensor, len(tables))
	largest := 0
	for i, nt := range tables {
		specs[i] = safetensors.Tensor{Name: nt.Name, DType: safetensors.F32, Shape: nt.Tensor.Shape}
		largest = max(largest, nt.Tensor.Len())
	}
	// One tensor's floats on the host, written in pieces of buf.
	host, buf := make([]float32, largest), make([]byte, 0, 1<<20)
	data := func(i int, w io.Writer) error {
		t := tables[i].Tensor
		h := host[:t.Len()]
		m.dev.CopyToHostF32(h, t)
		for len(h) > 0 {
			n := min(len(h), cap(buf)/4)
			b := buf[:4*n]
			for j, x := range h[:n] {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(x))
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			h = h[n:]
		}
		return nil
	}
	name := shardFileName(rank, ranks)
	sum := sha256.New()
	var size countWriter
	err := atomicfile.Write(filepath.Join(tmp, name), func(w io.Writer) error {
		return safetensors.EncodeStream(io.MultiWriter(w, sum, &size), specs, shardMeta(saveID, rank, ranks, step), data)
	})
	if err != nil {
		return manifestShard{}, fmt.Errorf("%s: %w", name, err)
	}
	return manifestShard{Rank: rank, File: name, Size: int64(size), SHA256: hex.EncodeToString(sum.Sum(nil))}, nil
}

// countWriter counts the bytes written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// shardStatus is what a rank reports to the others after its part of a
// save: its shard's entry, or why it failed.
type shardStatus struct {
	Shard manifestShard `json:"shard"`
	Err   string        `json:"err,omitempty"`
}

// saveSharded is SaveCheckpoint of a model whose tables are sharded by
// rows, each rank writing its shard. Every rank calls it.
//
// Rank 0 makes a temporary folder beside dir and tells the others its
// path; every rank writes its shard file there (so dir must be on a file
// system every rank sees, as the job's outputs are), rank 0 the dense
// tensors and the JSON files too; the ranks exchange their statuses; if
// all succeeded rank 0 writes the manifest and renames the folder into
// place, and tells the others whether that worked. So the checkpoint at
// dir is replaced completely or not at all, and a failure on any rank is
// an error on every rank.
func saveSharded(dir string, m *Model, st TrainState) error {
	c := m.comm
	rank := c.Rank()
	var tmp, saveID string
	var startErr error
	if rank == 0 {
		dir = filepath.Clean(dir)
		if startErr = checkReplaceable(dir); startErr == nil {
			startErr = os.MkdirAll(filepath.Dir(dir), 0o755)
		}
		if startErr == nil {
			removeStaleTemps(dir)
			tmp, startErr = atomicfile.MkdirTemp(dir)
		}
		if startErr == nil {
			unlock := lockDir(tmp)
			defer unlock()
			var id [16]byte
			_, _ = rand.Read(id[:]) // never fails (crypto/rand)
			saveID = hex.EncodeToString(id[:])
		}
	}
	committed := false
	defer func() {
		if rank == 0 && tmp != "" && !committed {
			_ = os.RemoveAll(tmp)
		}
	}()
	// The start: rank 0's folder (its bytes: a path need not be UTF-8)
	// and save id, or why there is none.
	start := struct {
		Tmp         []byte
		SaveID, Err string
	}{[]byte(tmp), saveID, errString(startErr)}
	var startMsg []byte
	if rank == 0 {
		startMsg, _ = json.Marshal(start)
	}
	msgs, err := allgatherBytes(c, startMsg)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(msgs[0], &start); err != nil {
		return fmt.Errorf("rank 0's start of the save: %w", err)
	}
	if start.Err != "" {
		if rank == 0 {
			return startErr
		}
		return fmt.Errorf("rank 0 of %d failed: %s", c.Size(), start.Err)
	}

	shard, werr := m.writeShard(string(start.Tmp), start.SaveID, st.Step)
	if werr == nil && rank == 0 {
		werr = writeCheckpointFiles(tmp, m, st, shardedCheckpointVersion, start.SaveID, nil)
	}
	statuses, err := agreeStatus(c, shardStatus{Shard: shard, Err: errString(werr)})
	if err != nil {
		return err
	}
	if err := failedRanks(c, werr, statuses); err != nil {
		return err
	}

	// Rank 0 commits; the others learn whether it did.
	var commitErr error
	if rank == 0 {
		man := shardManifest{
			Format: ShardManifestFormat, FormatVersion: shardManifestVersion, SaveID: saveID,
			Ranks: c.Size(), Sharding: ShardRow, Rule: shardRule, Step: st.Step, Epoch: st.Epoch,
			Tables: m.manifestTables(),
		}
		for _, s := range statuses {
			man.Shards = append(man.Shards, s.Shard)
		}
		commitErr = writeJSONFile(filepath.Join(tmp, manifestFile), man)
		if commitErr == nil {
			commitErr = syncDir(tmp)
		}
		if commitErr == nil {
			commitErr = atomicfile.ReplaceDirKeeping(tmp, dir, isCheckpointFile)
		}
		committed = commitErr == nil
	}
	outcome, err := agreeStatus(c, shardStatus{Err: errString(commitErr)})
	if err != nil {
		return err
	}
	if outcome[0].Err != "" {
		if rank == 0 {
			return commitErr
		}
		return fmt.Errorf("rank 0 of %d failed to commit the checkpoint: %s", c.Size(), outcome[0].Err)
	}
	return nil
}

// syncDir flushes the folder's entries to disk, so that the files in it
// are there before it is renamed into place. A file system that cannot
// sync a folder (EINVAL) is not an error: its renames are what they are.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// agreeStatus gives every rank every rank's status (collective).
func agreeStatus(c dist.Comm, st shardStatus) ([]shardStatus, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	msgs, err := allgatherBytes(c, b)
	if err != nil {
		return nil, err
	}
	out := make([]shardStatus, len(msgs))
	for r, msg := range msgs {
		if err := json.Unmarshal(msg, &out[r]); err != nil {
			return nil, fmt.Errorf("status of rank %d: %w", r, err)
		}
	}
	return out, nil
}

// failedRanks turns the ranks' statuses into this rank's error: its own
// error if it failed, else the failures of the others, nil if none.
func failedRanks(c dist.Comm, own error, statuses []shardStatus) error {
	if own != nil {
		return own
	}
	var bad []string
	for r, s := range statuses {
		if s.Err != "" {
			bad = append(bad, fmt.Sprintf("rank %d: %s", r, s.Err))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%d of the %d ranks failed (%s)", len(bad), c.Size(), strings.Join(bad, "; "))
}

// allgatherBytes gives every rank every rank's msg (collective; the
// messages are small: statuses, paths), one byte per int32.
func allgatherBytes(c dist.Comm, msg []byte) ([][]byte, error) {
	n := c.Size()
	ones := make([]int, n)
	for i := range ones {
		ones[i] = 1
	}
	lens := make([]int32, n)
	if err := c.AllgathervInt32([]int32{int32(len(msg))}, lens, ones); err != nil {
		return nil, err
	}
	counts := make([]int, n)
	total := 0
	for r, l := range lens {
		counts[r] = int(l)
		total += int(l)
	}
	send := make([]int32, len(msg))
	for i, b := range msg {
		send[i] = int32(b)
	}
	recv := make([]int32, total)
	if err := c.AllgathervInt32(send, recv, counts); err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	at := 0
	for r, cnt := range counts {
		out[r] = make([]byte, cnt)
		for i := range cnt {
			out[r][i] = byte(recv[at+i])
		}
		at += cnt
	}
	return out, nil
}

// readManifest reads and checks shards.json against the model m (its
// tables: names, vocabularies, widths, tensors) and the checkpoint's
// training step.
func readManifest(dir string, m *Model, step int) (*shardManifest, error) {
	data, err := readlimit.ReadFile(filepath.Join(dir, manifestFile), maxStateSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s is missing: config.json says format version %d, a checkpoint written per shard", manifestFile, shardedCheckpointVersion)
		}
		return nil, err
	}
	var man shardManifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&man); err != nil {
		return nil, fmt.Errorf("%s: %w", manifestFile, err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", manifestFile, fmt.Sprintf(format, args...))
	}
	switch {
	case man.Format != ShardManifestFormat:
		return nil, fail("format is %q, want %q", man.Format, ShardManifestFormat)
	case man.FormatVersion != shardManifestVersion:
		return nil, fail("format version %d is not supported (this build reads %d)", man.FormatVersion, shardManifestVersion)
	case man.Sharding != ShardRow || man.Rule != shardRule:
		return nil, fail("sharding %q (%q) is not the row sharding this build reads (%q)", man.Sharding, man.Rule, shardRule)
	case man.Ranks < 1:
		return nil, fail("%d ranks", man.Ranks)
	case len(man.Shards) != man.Ranks:
		return nil, fail("lists %d shard files for %d ranks", len(man.Shards), man.Ranks)
	case man.Step != step:
		return nil, fail("is of step %d, %s of step %d: the files of two saves", man.Step, stateFile, step)
	case len(man.SaveID) != 32:
		return nil, fail("save id %q is not 32 hex digits", man.SaveID)
	}
	for j, s := range man.Shards {
		if want := shardFileName(j, man.Ranks); s.Rank != j || s.File != want {
			return nil, fail("shard %d is rank %d in %q, want rank %d in %q", j, s.Rank, s.File, j, want)
		}
		if s.Size < 8 || len(s.SHA256) != 64 {
			return nil, fail("%s: size %d or sha256 %q is not valid", s.File, s.Size, s.SHA256)
		}
	}
	want := m.manifestTables()
	if len(man.Tables) != len(want) {
		return nil, fail("lists %d tables, the model (config.json and schema.pbtxt) has %d", len(man.Tables), len(want))
	}
	for i, w := range want {
		t := man.Tables[i]
		if t.Name != w.Name || t.Rows != w.Rows || t.Dim != w.Dim {
			return nil, fail("table %d is %q of %d rows x %d, the model's (config.json and schema.pbtxt) is %q of %d rows x %d: a checkpoint of another model or vocabulary",
				i, t.Name, t.Rows, t.Dim, w.Name, w.Rows, w.Dim)
		}
		if !slices.Equal(t.Tensors, w.Tensors) {
			return nil, fail("table %q has tensors %v, the model's are %v", t.Name, t.Tensors, w.Tensors)
		}
	}
	return &man, nil
}

// readShards fills the model's tables (and, with optimizer, their
// optimizer state) from the shard files of the manifest, keeping the rows
// the model holds: every row for a model whose tables are not sharded,
// the rows id mod N' == r for rank r of N'. Files that hold none of those
// rows are not read; the others are streamed side by side, one tensor at
// a time (every file has the same tensors in the same order), so that the
// host memory is one tensor of the model's rows and a read buffer per
// file, never a full table of a sharded model. Each file read is read
// once, whole, and its SHA-256 checked against the manifest's.
func (m *Model) readShards(dir string, man *shardManifest, optimizer bool) error {
	// Every file must be there and whole, read by this rank or not.
	for _, s := range man.Shards {
		st, err := os.Stat(filepath.Join(dir, s.File))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("shard file %s is missing (%s lists %d shards)", s.File, manifestFile, man.Ranks)
			}
			return err
		}
		if st.Size() != s.Size {
			return fmt.Errorf("shard file %s is %d bytes, %s says %d: the file is truncated or of another save", s.File, st.Size(), manifestFile, s.Size)
		}
	}
	var files []*shardReader
	defer func() {
		for _, f := range files {
			f.close()
		}
	}()
	for _, s := range man.Shards {
		if !holdsAnyOf(m.shard, s.Rank, man.Ranks, man.Tables) {
			continue
		}
		f, err := openShard(dir, man, s)
		if err != nil {
			return fmt.Errorf("shard file %s: %w", s.File, err)
		}
		files = append(files, f)
		if first := files[0]; !slices.EqualFunc(f.layout.Tensors, first.layout.Tensors, func(a, b safetensors.Span) bool { return a.Name == b.Name }) {
			return fmt.Errorf("shard file %s: its tensors are not in the order of %s's", s.File, first.shard.File)
		}
	}
	if len(files) == 0 {
		return nil // tables smaller than the ranks: this rank holds no row
	}
	model := map[string]NamedTensor{}
	for _, nt := range m.Params() {
		model[nt.Name] = nt
	}
	if optimizer {
		for _, nt := range m.OptimizerState() {
			model[nt.Name] = nt
		}
	}
	dims := map[string]int{}
	for _, t := range man.Tables {
		for _, name := range t.Tensors {
			dims[name] = t.Dim
		}
	}
	largest := 0
	for _, nt := range model {
		if _, ok := dims[nt.Name]; ok {
			largest = max(largest, nt.Tensor.Len())
		}
	}
	buf := make([]float32, largest) // one tensor at a time
	for i, sp := range files[0].layout.Tensors {
		nt, ok := model[sp.Name]
		var host []float32
		if ok {
			host = buf[:nt.Tensor.Len()]
		}
		got := 0
		for _, f := range files {
			n, err := f.readTensor(i, dims[sp.Name], m.shard, host)
			if err != nil {
				return fmt.Errorf("shard file %s: %w", f.shard.File, err)
			}
			got += n
		}
		if !ok {
			continue // an optimizer tensor of a load without optimizer
		}
		if want := nt.Tensor.Rows(); got != want {
			return fmt.Errorf("tensor %q: the shard files gave %d of the model's %d rows", sp.Name, got, want)
		}
		m.dev.CopyFromHostF32(nt.Tensor, host)
	}
	for _, f := range files {
		if err := f.finish(); err != nil {
			return fmt.Errorf("shard file %s: %w", f.shard.File, err)
		}
	}
	return nil
}

// shardReader streams one shard file, hashing what it reads.
type shardReader struct {
	shard  manifestShard
	ranks  int
	f      *os.File
	sum    hash.Hash
	r      *bufio.Reader
	layout *safetensors.Layout
	row    []byte
}

// openShard opens a shard file and checks its header against the
// manifest: the save, the rank, the tensors and their shapes.
func openShard(dir string, man *shardManifest, s manifestShard) (*shardReader, error) {
	f, err := os.Open(filepath.Join(dir, s.File))
	if err != nil {
		return nil, err
	}
	sr := &shardReader{shard: s, ranks: man.Ranks, f: f, sum: sha256.New()}
	sr.r = bufio.NewReaderSize(io.TeeReader(f, sr.sum), 256<<10)
	if err := sr.checkHeader(man); err != nil {
		f.Close()
		return nil, err
	}
	return sr, nil
}

func (sr *shardReader) checkHeader(man *shardManifest) error {
	s := sr.shard
	l, err := safetensors.ReadLayout(sr.r, s.Size)
	if err != nil {
		return err
	}
	sr.layout = l
	if got := l.Metadata["save_id"]; got != man.SaveID {
		return fmt.Errorf("save id %q, %s's is %q: a shard of another save", got, manifestFile, man.SaveID)
	}
	want := shardMeta(man.SaveID, s.Rank, man.Ranks, man.Step)
	for _, k := range []string{"format", "rank", "ranks", "step"} {
		if l.Metadata[k] != want[k] {
			return fmt.Errorf("metadata %s is %q, want %q", k, l.Metadata[k], want[k])
		}
	}
	shapes := map[string][]int{}
	for _, t := range man.Tables {
		for _, name := range t.Tensors {
			shapes[name] = []int{layers.RowShard{Rank: s.Rank, Size: man.Ranks}.Rows(t.Rows), t.Dim}
		}
	}
	if len(l.Tensors) != len(shapes) {
		return fmt.Errorf("%d tensors, %s gives %d", len(l.Tensors), manifestFile, len(shapes))
	}
	for _, sp := range l.Tensors {
		shape, ok := shapes[sp.Name]
		if !ok {
			return fmt.Errorf("tensor %q is not among the tables' tensors of %s", sp.Name, manifestFile)
		}
		if sp.DType != safetensors.F32 || !slices.Equal(sp.Shape, shape) {
			return fmt.Errorf("tensor %q is %s%v, want F32%v", sp.Name, sp.DType, sp.Shape, shape)
		}
	}
	return nil
}

// readTensor reads the file's tensor i, of rows of d floats, and puts the
// rows that shard holds into host at their local rows (nil host: skips
// the tensor). It returns how many rows it put.
func (sr *shardReader) readTensor(i, d int, shard layers.RowShard, host []float32) (int, error) {
	sp := sr.layout.Tensors[i]
	if host == nil {
		_, err := io.CopyN(io.Discard, sr.r, sp.End-sp.Begin)
		return 0, err
	}
	if cap(sr.row) < 4*d {
		sr.row = make([]byte, 4*d)
	}
	row := sr.row[:4*d]
	n := 0
	for k := range sp.Shape[0] {
		if _, err := io.ReadFull(sr.r, row); err != nil {
			return n, fmt.Errorf("tensor %q: %w", sp.Name, err)
		}
		id := k*sr.ranks + sr.shard.Rank
		if !owns(shard, id) {
			continue
		}
		dst := host[localRow(shard, id)*d:][:d]
		for j := range dst {
			x := math.Float32frombits(binary.LittleEndian.Uint32(row[4*j:]))
			// A NaN or infinite weight makes every score the same (or
			// NaN) without a word: refuse it.
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return n, fmt.Errorf("tensor %q holds %v in row %d (id %d): the checkpoint is corrupt or training diverged", sp.Name, x, k, id)
			}
			dst[j] = x
		}
		n++
	}
	return n, nil
}

// finish reads the rest of the file and checks its SHA-256.
func (sr *shardReader) finish() error {
	if _, err := io.Copy(io.Discard, sr.r); err != nil {
		return err
	}
	if got := hex.EncodeToString(sr.sum.Sum(nil)); got != sr.shard.SHA256 {
		return fmt.Errorf("checksum mismatch (sha256 %s, %s says %s): the file is corrupt or of another save", got, manifestFile, sr.shard.SHA256)
	}
	return nil
}

func (sr *shardReader) close() { sr.f.Close() }

// holdsAnyOf reports whether s (the model's shard) holds a row of shard
// file j of n: one of its first local rows k, id k*n + j (the pattern of
// owners repeats every s.Size rows).
func holdsAnyOf(s layers.RowShard, j, n int, tables []manifestTable) bool {
	rows := 0
	for _, t := range tables {
		rows = max(rows, layers.RowShard{Rank: j, Size: n}.Rows(t.Rows))
	}
	for k := range min(rows, max(s.Size, 1)) {
		if owns(s, k*n+j) {
			return true
		}
	}
	return false
}

// owns reports whether the shard s holds the row id.
func owns(s layers.RowShard, id int) bool { return !s.Sharded() || id%s.Size == s.Rank }

// localRow is the local row of id in the shard s that holds it.
func localRow(s layers.RowShard, id int) int {
	if !s.Sharded() {
		return id
	}
	return id / s.Size
}
