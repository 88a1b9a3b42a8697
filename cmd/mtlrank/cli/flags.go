package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// usageError marks a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// intList is a comma-separated list of positive ints, e.g. "128,64,32". An
// empty string (or "None") is an empty list, as Merlin's parse_list_arg
// has it; an empty entry ("1,,2", "64,") is an error, as it is there,
// rather than a layer silently dropped.
type intList struct{ v *[]int }

func (l intList) String() string {
	if l.v == nil {
		return ""
	}
	parts := make([]string, len(*l.v))
	for i, x := range *l.v {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ",")
}

func (l intList) Set(s string) error {
	out := []int{}
	if t := strings.TrimSpace(s); t != "" && t != "None" {
		for i, p := range strings.Split(s, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				return fmt.Errorf("entry %d is empty (give positive sizes separated by commas, e.g. 128,64,32)", i+1)
			}
			x, err := strconv.Atoi(p)
			if err != nil {
				return fmt.Errorf("%q is not an integer", p)
			}
			if x <= 0 {
				return fmt.Errorf("layer size must be positive, got %d", x)
			}
			out = append(out, x)
		}
	}
	*l.v = out
	return nil
}

// strList is a comma-separated list of strings; empty entries are kept only
// when keepEmpty (the --tasks_sample_space alignment needs them).
type strList struct {
	v         *[]string
	keepEmpty bool
}

func (l strList) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l strList) Set(s string) error {
	out := []string{}
	if s != "" && s != "None" {
		for _, p := range strings.Split(s, ",") {
			p = strings.TrimSpace(p)
			if p == "" && !l.keepEmpty {
				continue
			}
			out = append(out, p)
		}
	}
	*l.v = out
	return nil
}

// optFloat32 is a float32 flag that may be left unset (nil), e.g.
// --fill_nan, whose absence means "no fill" rather than a value.
type optFloat32 struct{ v **float32 }

func (f optFloat32) String() string {
	if f.v == nil || *f.v == nil {
		return ""
	}
	return strconv.FormatFloat(float64(**f.v), 'g', -1, 32)
}

func (f optFloat32) Set(s string) error {
	x, err := strconv.ParseFloat(strings.TrimSpace(s), 32)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return fmt.Errorf("%q is not a finite number", s)
	}
	v := float32(x)
	*f.v = &v
	return nil
}

// byteSize is a memory size flag: a number of bytes with an optional unit,
// K/M/G/T (powers of 1024, also written KiB, KB, ...), e.g. 512M or 1.5G.
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil || *b.v == 0 {
		return ""
	}
	return strconv.FormatInt(*b.v, 10)
}

func (b byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b.v = n
	return nil
}

func parseByteSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := 1.0
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = math.Pow(1024, float64(i+1))
			t = t[:n-1]
		}
	}
	x, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || math.IsNaN(x) || x < 0 || x*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a memory size (e.g. 16G, 512M, 1073741824)", s)
	}
	return int64(x * mult), nil
}

// boolValue is a boolean flag accepting Merlin's str2bool spellings
// (yes/true/t/y/1, no/false/f/n/0, any case); alone it means true.
type boolValue struct{ v *bool }

func (b boolValue) String() string {
	if b.v == nil {
		return "false"
	}
	return strconv.FormatBool(*b.v)
}

func (b boolValue) Set(s string) error {
	v, ok := parseBool(s)
	if !ok {
		return fmt.Errorf("boolean value expected, got %q", s)
	}
	*b.v = v
	return nil
}

func (b boolValue) IsBoolFlag() bool { return true }

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "yes", "true", "t", "y", "1":
		return true, true
	case "no", "false", "f", "n", "0":
		return false, true
	}
	return false, false
}

// flagName returns the name of a "-x", "--x" or "--x=v" argument, or "".
func flagName(arg string) (name string, value string, hasValue bool) {
	if len(arg) < 2 || arg[0] != '-' || arg == "--" {
		return "", "", false
	}
	s := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	if i := strings.IndexByte(s, '='); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// joinBoolValues rewrites "--flag value" into "--flag=value" for boolean
// flags followed by a str2bool word, so "--use_task_towers False" (Merlin's
// nargs='?' booleans) parses as the Merlin script does.
func joinBoolValues(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		name, _, has := flagName(a)
		if name != "" && !has && i+1 < len(args) {
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					if _, ok := parseBool(args[i+1]); ok {
						out = append(out, a+"="+args[i+1])
						i++
						continue
					}
				}
			}
		}
		out = append(out, a)
	}
	return out
}

// dynamicFloats extracts "--<prefix><target> value" / "--<prefix><target>=value"
// arguments (Merlin's per-target flags) from args, returning them by prefix
// and target, and the other arguments.
func dynamicFloats(args []string, prefixes ...string) (map[string]map[string]float64, []string, error) {
	found := map[string]map[string]float64{}
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, has := flagName(a)
		prefix := ""
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				prefix = p
			}
		}
		if prefix == "" {
			rest = append(rest, a)
			continue
		}
		target := strings.TrimPrefix(name, prefix)
		if target == "" {
			return nil, nil, usagef("flag --%s needs a target name after the prefix, e.g. --%sclick", name, prefix)
		}
		if !has {
			if i+1 >= len(args) {
				return nil, nil, usagef("flag --%s needs a value", name)
			}
			i++
			value = args[i]
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, nil, usagef("flag --%s: %q is not a finite number", name, value)
		}
		if v < 0 {
			return nil, nil, usagef("flag --%s: must be >= 0, got %v", name, v)
		}
		if found[prefix] == nil {
			found[prefix] = map[string]float64{}
		}
		if _, dup := found[prefix][target]; dup {
			return nil, nil, usagef("flag --%s given twice", name)
		}
		found[prefix][target] = v
	}
	return found, rest, nil
}

// wantsHelp reports whether args ask for help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		switch a {
		case "-h", "-help", "--help", "help":
			return true
		}
	}
	return false
}

// invalidValueRE matches the flag package's message for a bad value.
var invalidValueRE = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for flag -+([^:]+): (.*)$`)

// parseFlags parses args into fs, turning flag errors into usage errors and
// rejecting positional arguments. Flags given explicitly are returned.
func parseFlags(fs *flag.FlagSet, args []string) (map[string]bool, error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(joinBoolValues(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		msg := err.Error()
		if strings.HasPrefix(msg, "flag provided but not defined: ") {
			name := strings.TrimLeft(strings.TrimPrefix(msg, "flag provided but not defined: "), "-")
			msg = "unknown flag --" + name
			if s := suggest(fs, name); s != "" {
				msg += " (did you mean --" + s + "?)"
			}
		}
		if m := invalidValueRE.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("--%s: invalid value %q: %s", m[2], m[1], m[3])
		} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
			msg = "--" + strings.TrimLeft(name, "-") + " needs a value"
		}
		return nil, &usageError{msg}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (flags are --name=value)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set, nil
}

// suggest returns the defined flag closest to name (edit distance <= 3).
func suggest(fs *flag.FlagSet, name string) string {
	best, bestD := "", 4
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printUsage writes a command's synopsis, description and flags (no
// Flags section when it has none).
func printUsage(w io.Writer, fs *flag.FlagSet, synopsis, description string) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", synopsis, strings.TrimSpace(description))
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	fmt.Fprint(w, "\nFlags:\n")
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		typ, usage := flag.UnquoteUsage(f)
		switch f.Value.(type) {
		case intList:
			typ = "ints"
		case strList:
			typ = "list"
		case float32Value:
			typ = "float"
		case kvList:
			typ = "key=value,..."
		case optFloat32:
			typ = "float"
		case byteSize:
			typ = "size"
		}
		line := "  --" + n
		if _, ok := f.Value.(boolValue); ok {
			line += "[=bool]"
		} else if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "[]" && f.DefValue != "0" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
}
