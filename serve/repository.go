package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/mtlrank/mtlrank/mtl"
)

// Model states in the repository index, as Triton reports them.
const (
	StateReady       = "READY"
	StateUnavailable = "UNAVAILABLE"
)

// Repository holds the models of a model repository folder laid out as
// Triton's: DIR/<name>/<version>/ with a checkpoint written by
// `train --save_model_path` (and the workflow.json that encoded its data).
// Versions are positive integers; a request without a version gets the
// highest.
type Repository struct {
	dir     string
	opt     ModelOptions
	metrics *Metrics
	log     *slog.Logger

	mu     sync.RWMutex
	models map[string]*entry
	load   sync.Mutex // serializes Load and Unload
	closed atomic.Bool
}

// entry is a model name's state: its loaded versions, highest first.
type entry struct {
	versions []*Model
	state    string
	reason   string
}

// NewRepository returns an empty repository over dir (call LoadAll).
func NewRepository(dir string, opt ModelOptions, metrics *Metrics, log *slog.Logger) (*Repository, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model repository %s is not a folder", dir)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Repository{dir: dir, opt: opt, metrics: metrics, log: log, models: map[string]*entry{}}, nil
}

// LoadAll loads every model of the repository; it fails on the first model
// that does not load.
func (r *Repository) LoadAll() error {
	des, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("model repository: %w", err)
	}
	n := 0
	for _, de := range des {
		if !de.IsDir() || de.Name()[0] == '.' {
			continue
		}
		if err := r.Load(de.Name()); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("model repository %s holds no model folder (want %s/<name>/<version>/)", r.dir, r.dir)
	}
	return nil
}

// versionDirs lists the numeric version folders of model name, highest
// first.
func (r *Repository) versionDirs(name string) ([]string, error) {
	des, err := os.ReadDir(filepath.Join(r.dir, name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errorf(NotFound, "model %q is not in the repository %s", name, r.dir)
		}
		return nil, err
	}
	var vs []int64
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		v, err := strconv.ParseInt(de.Name(), 10, 64)
		if err != nil || v < 1 || strconv.FormatInt(v, 10) != de.Name() {
			r.log.Warn("ignoring a folder that is not a version number", "model", name, "folder", de.Name())
			continue
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, errorf(NotFound, "model %q: %s holds no version folder (want <version>/ with a checkpoint, version a positive integer)", name, filepath.Join(r.dir, name))
	}
	slices.Sort(vs)
	slices.Reverse(vs)
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strconv.FormatInt(v, 10)
	}
	return out, nil
}

// Load loads (or reloads) every version of model name. The previous
// versions keep serving until the new ones are ready, then are drained and
// freed. A name must be a plain folder name in the repository.
func (r *Repository) Load(name string) error {
	if name == "" || name != filepath.Base(name) || name[0] == '.' {
		return errorf(InvalidArgument, "bad model name %q", name)
	}
	r.load.Lock()
	defer r.load.Unlock()
	if r.closed.Load() {
		return errorf(Unavailable, "the server is shutting down")
	}
	fail := func(err error) error {
		r.mu.Lock()
		if e := r.models[name]; e != nil {
			e.reason = err.Error()
		} else {
			r.models[name] = &entry{state: StateUnavailable, reason: err.Error()}
		}
		r.mu.Unlock()
		return err
	}
	versions, err := r.versionDirs(name)
	if err != nil {
		return fail(err)
	}
	var loaded []*Model
	for _, v := range versions {
		dir := filepath.Join(r.dir, name, v)
		if !mtl.IsCheckpoint(dir) {
			err := errorf(InvalidArgument, "model %s version %s: %s holds no checkpoint (config.json of `train --save_model_path`)", name, v, dir)
			for _, m := range loaded {
				m.close()
			}
			return fail(err)
		}
		m, err := LoadModel(name, v, dir, r.opt, r.metrics)
		if err != nil {
			for _, m := range loaded {
				m.close()
			}
			return fail(errorf(InvalidArgument, "load %s: %v", dir, err))
		}
		loaded = append(loaded, m)
		r.log.Info("loaded model", "model", name, "version", v, "path", dir, "inputs", len(m.inputs), "outputs", len(m.tasks), "workflow", m.wf != nil)
	}
	r.mu.Lock()
	old := r.models[name]
	r.models[name] = &entry{versions: loaded, state: StateReady}
	r.mu.Unlock()
	if old != nil {
		for _, m := range old.versions {
			m.close()
		}
	}
	return nil
}

// Unload stops serving model name: new requests fail at once, requests in
// flight finish, then the model is freed.
func (r *Repository) Unload(name string) error {
	r.load.Lock()
	defer r.load.Unlock()
	r.mu.Lock()
	e := r.models[name]
	if e == nil || e.state != StateReady {
		r.mu.Unlock()
		return errorf(NotFound, "model %q is not loaded", name)
	}
	r.models[name] = &entry{state: StateUnavailable, reason: "unloaded"}
	r.mu.Unlock()
	for _, m := range e.versions {
		m.close()
	}
	r.log.Info("unloaded model", "model", name)
	return nil
}

// Acquire returns version version of model name (empty: the highest) and
// a release function to call when the request is done; the model is not
// freed before.
func (r *Repository) Acquire(name, version string) (*Model, func(), error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.models[name]
	if e == nil {
		return nil, nil, errorf(NotFound, "unknown model %q", name)
	}
	if e.state != StateReady {
		return nil, nil, errorf(Unavailable, "model %q is not ready: %s", name, e.reason)
	}
	for _, m := range e.versions {
		if version == "" || m.Version == version {
			m.inflight.Add(1)
			return m, m.inflight.Done, nil
		}
	}
	return nil, nil, errorf(NotFound, "model %q has no version %q", name, version)
}

// Versions lists the loaded versions of model name, highest first.
func (r *Repository) Versions(name string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	if e := r.models[name]; e != nil {
		for _, m := range e.versions {
			out = append(out, m.Version)
		}
	}
	return out
}

// IndexEntry is one row of the repository index.
type IndexEntry struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Index lists the models in the repository folder and their states; with
// readyOnly, only the ready ones.
func (r *Repository) Index(readyOnly bool) ([]IndexEntry, error) {
	des, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []IndexEntry
	for _, de := range des {
		if !de.IsDir() || de.Name()[0] == '.' {
			continue
		}
		e := r.models[de.Name()]
		switch {
		case e != nil && e.state == StateReady:
			for _, m := range e.versions {
				out = append(out, IndexEntry{Name: de.Name(), Version: m.Version, State: StateReady})
			}
		case readyOnly:
		case e != nil:
			out = append(out, IndexEntry{Name: de.Name(), State: e.state, Reason: e.reason})
		default:
			out = append(out, IndexEntry{Name: de.Name()})
		}
	}
	return out, nil
}

// Ready reports whether at least one model is ready.
func (r *Repository) Ready() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.models {
		if e.state == StateReady {
			return true
		}
	}
	return false
}

// Close unloads every model, waiting for the requests in flight.
func (r *Repository) Close() {
	r.load.Lock()
	defer r.load.Unlock()
	r.closed.Store(true)
	r.mu.Lock()
	models := r.models
	r.models = map[string]*entry{}
	r.mu.Unlock()
	for _, e := range models {
		for _, m := range e.versions {
			m.close()
		}
	}
}
