//! Integration tests: the real binary, driven by the real `go` command.
//! One binary for all of them (faster to link); one module per area.

mod util;

// Flags, environment and subcommands of the binary.
mod cli;
// Real `go build` / `go test` / `go vet` with GOCACHEPROG pointing at us.
mod go_build;
