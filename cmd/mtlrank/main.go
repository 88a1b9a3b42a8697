// Command mtlrank trains, evaluates and serves multi-task ranking models
// (shared-bottom MLP, MMoE, CGC, PLE, DCN, DLRM). Run "mtlrank --help" for the
// commands; the implementation lives in package cli.
package main

import (
	"os"

	"github.com/mtlrank/mtlrank/cmd/mtlrank/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdout, os.Stderr))
}
