package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/readlimit"
)

// File names looked up in a dataset directory, in this order.
const (
	PbtxtFile = "schema.pbtxt"
	JSONFile  = "schema.json"
)

// MaxFileSize bounds the schema files Load reads (256 MiB, far above a
// schema of a hundred thousand features), so that a corrupt or huge file is
// an error instead of exhausting memory.
const MaxFileSize = 256 << 20

// Load reads a schema from path: a .pbtxt or .json file, or a directory
// holding schema.pbtxt (preferred) or schema.json. A file with another
// extension is read as JSON when its first non-blank byte is '{', else as
// pbtxt. Parse errors name the file, line and column.
func Load(path string) (*Schema, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("schema: load: %w", err)
	}
	if st.IsDir() {
		found := ""
		for _, name := range []string{PbtxtFile, JSONFile} {
			p := filepath.Join(path, name)
			if _, err := os.Stat(p); err == nil {
				found = p
				break
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("schema: load: %w", err)
			}
		}
		if found == "" {
			return nil, fmt.Errorf("schema: load: directory %s holds neither %s nor %s", path, PbtxtFile, JSONFile)
		}
		path = found
	}
	data, err := readlimit.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("schema: load: %w", err)
	}
	var s *Schema
	if isJSONPath(path, data) {
		s, err = ParseJSON(bytes.NewReader(data))
	} else {
		s, err = ParsePbtxt(bytes.NewReader(data))
	}
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			named := *pe
			named.File = path
			return nil, fmt.Errorf("schema: load: %w", &named)
		}
		return nil, fmt.Errorf("schema: load %s: %w", path, err)
	}
	return s, nil
}

func isJSONPath(path string, data []byte) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return true
	case ".pbtxt", ".txt", ".textproto", ".prototxt":
		return false
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '{'
}

// Save writes s to path in the format its extension names (.json for
// schema.json, .pbtxt/.txt/.textproto/.prototxt for pbtxt); an existing
// directory gets schema.pbtxt. The file is written under a temporary name
// in the same directory and renamed, so readers never see a partial file.
func Save(path string, s *Schema) error {
	if s == nil {
		return errors.New("schema: save: nil schema")
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, PbtxtFile)
	}
	var buf bytes.Buffer
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		if err := s.WriteJSON(&buf); err != nil {
			return fmt.Errorf("schema: save %s: %w", path, err)
		}
	case ".pbtxt", ".txt", ".textproto", ".prototxt":
		if err := s.WritePbtxt(&buf); err != nil {
			return fmt.Errorf("schema: save %s: %w", path, err)
		}
	default:
		return fmt.Errorf("schema: save %s: unknown extension (want .pbtxt or .json)", path)
	}
	if err := atomicfile.WriteFile(path, buf.Bytes()); err != nil {
		return fmt.Errorf("schema: save: %w", err)
	}
	return nil
}

// Clone returns a deep copy of s: features, domains, properties and the
// content kept from parsing. Modifying the copy never changes s.
func (s *Schema) Clone() *Schema {
	if s == nil {
		return nil
	}
	out := &Schema{Raw: append([]string(nil), s.Raw...)}
	if s.Raw == nil {
		out.Raw = nil
	}
	if s.Features != nil {
		out.Features = make([]*Feature, len(s.Features))
		for i, f := range s.Features {
			out.Features[i] = f.Clone()
		}
	}
	return out
}

// Clone returns a deep copy of f. Property values of the JSON kinds are
// copied; other values (rare: set by Go code) are shared.
func (f *Feature) Clone() *Feature {
	if f == nil {
		return nil
	}
	out := *f
	if f.Tags != nil {
		out.Tags = append([]Tag{}, f.Tags...)
	}
	if f.IntDomain != nil {
		d := *f.IntDomain
		out.IntDomain = &d
	}
	if f.FloatDomain != nil {
		d := *f.FloatDomain
		out.FloatDomain = &d
	}
	if f.ValueCount != nil {
		vc := *f.ValueCount
		out.ValueCount = &vc
	}
	if f.Properties != nil {
		out.Properties = cloneValue(f.Properties).(map[string]any)
	}
	if f.Raw != nil {
		out.Raw = append([]string{}, f.Raw...)
	}
	out.pb = f.pb.clone()
	return &out
}
