package cli

import (
	"bytes"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVersionText(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	cases := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"clean clone", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261207093804-5b348504ab55"},
			Settings: vcs("vcs", "git", "vcs.revision", "5b348504ab55d75de91a9062e58d0c63315e0798", "vcs.time", "2026-12-07T09:38:04Z", "vcs.modified", "false")}, true,
			"mtlrank v0.0.0-20261207093804-5b348504ab55 revision 5b348504ab55d75de91a9062e58d0c63315e0798 (2026-12-07T09:38:04Z) go1.26.8"},
		{"changed working tree", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0+dirty"},
			Settings: vcs("vcs.revision", "abc123", "vcs.modified", "true")}, true,
			"mtlrank v1.2.0+dirty revision abc123+modified go1.26.8"},
		{"module version, no VCS", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}}, true,
			"mtlrank v1.2.0 revision unknown (no VCS information: built outside a git clone or with -buildvcs=false) go1.26.8"},
		{"devel", &debug.BuildInfo{GoVersion: "go1.26.8"}, true,
			"mtlrank (devel) revision unknown (no VCS information: built outside a git clone or with -buildvcs=false) go1.26.8"},
		{"no build information", nil, false, "mtlrank (no build information)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, versionText(tc.bi, tc.ok))
		})
	}
}

// TestVersionCommand: "mtlrank --version" and "mtlrank version" print the
// same line, the build's; the command takes no arguments.
func TestVersionCommand(t *testing.T) {
	var a, b, errs bytes.Buffer
	require.Equal(t, 0, RunContext(t.Context(), []string{"--version"}, &a, &errs), errs.String())
	require.Equal(t, 0, RunContext(t.Context(), []string{"version"}, &b, &errs), errs.String())
	assert.Equal(t, a.String(), b.String())
	assert.Equal(t, versionText(debug.ReadBuildInfo())+"\n", a.String())
	assert.Equal(t, 2, RunContext(t.Context(), []string{"version", "extra"}, &a, &errs))
	assert.Contains(t, errs.String(), `unexpected argument "extra"`)
}
