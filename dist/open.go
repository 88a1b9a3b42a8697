package dist

import "fmt"

// Open returns the communicator named by kind, the value of the CLI's
// --distributed: "" or "none" is Local (one process), "mpi" is InitMPI.
func Open(kind string) (Comm, error) {
	switch kind {
	case "", "none":
		return Local(), nil
	case "mpi":
		return InitMPI()
	default:
		return nil, fmt.Errorf("dist: unknown kind %q (want none or mpi)", kind)
	}
}
