package cli

import (
	"context"
	"flag"
	"fmt"
	"runtime/debug"
	"strings"
)

// versionText describes a build from its build information: the module
// version, the VCS revision and time (with "+modified" for a build from a
// changed working tree) and the Go version. ok is ReadBuildInfo's second
// result.
func versionText(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "mtlrank (no build information)"
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mtlrank %s", version)
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, " revision %s", rev)
		if settings["vcs.modified"] == "true" {
			b.WriteString("+modified")
		}
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
	} else {
		// go build stamps the revision only in a git clone, with
		// -buildvcs not false (make build asks for it).
		b.WriteString(" revision unknown (no VCS information: built outside a git clone or with -buildvcs=false)")
	}
	fmt.Fprintf(&b, " %s", bi.GoVersion)
	return b.String()
}

func runVersion(_ context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := helpOr(e, fs, args, "mtlrank version", "Prints the module version, the VCS revision and the Go version of this build\n(also 'mtlrank --version')."); err != nil {
		return err
	}
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, versionText(debug.ReadBuildInfo()))
	return nil
}
