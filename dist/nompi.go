//go:build !mpi

package dist

// InitMPI fails with ErrNoMPI: this build has no MPI (build with -tags mpi).
func InitMPI() (Comm, error) { return nil, ErrNoMPI }
