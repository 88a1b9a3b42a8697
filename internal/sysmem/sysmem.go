// Package sysmem tells how much memory this process could ever hold, so
// that an allocation that can only end in the Go runtime's fatal "out of
// memory" (which no caller can recover from) is refused with an error
// first.
package sysmem

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Files read; variables so that tests can point them elsewhere.
var (
	memInfoPath = "/proc/meminfo"
	// cgroupMax are the memory limit files of the process's cgroup, v2
	// then v1.
	cgroupMax = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}
)

// Ceiling returns the most memory this process could hold: the machine's
// RAM plus swap (MemTotal + SwapTotal of /proc/meminfo), or the memory
// cgroup's limit when that is lower. ok is false when neither is known.
// Unlike the memory available now, the ceiling cannot be raised by freeing
// memory elsewhere: a request above it can never succeed.
func Ceiling() (bytes int64, ok bool) {
	total, ok := machineTotal()
	if n, cok := cgroupLimit(); cok && (!ok || n < total) {
		return n, true
	}
	return total, ok
}

// machineTotal is MemTotal + SwapTotal from /proc/meminfo.
func machineTotal() (int64, bool) {
	f, err := os.Open(memInfoPath)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	var total int64
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "MemTotal:       32791204 kB"
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || (fields[0] != "MemTotal:" && fields[0] != "SwapTotal:") {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil || kb < 0 {
			return 0, false
		}
		total += kb << 10
		found = found || fields[0] == "MemTotal:"
	}
	return total, found && total > 0
}

// cgroupLimit is the memory cgroup's limit; ok is false without one ("max",
// or the v1 "unlimited" near 2^63).
func cgroupLimit() (int64, bool) {
	for _, path := range cgroupMax {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 {
			continue
		}
		return n, true
	}
	return 0, false
}
