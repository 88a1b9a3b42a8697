//go:build !unix

package loadgen

import "time"

// processCPU is unknown on this system: the table leaves its column empty.
func processCPU() time.Duration { return 0 }
