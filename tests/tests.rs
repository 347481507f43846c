//! Integration tests: the real binary, driven by the real `go` command.
//! One binary for all of them (faster to link); one module per area.

mod util;

// Hostile protocol input: a seeded generator and its checks (shared with examples/fuzz_protocol.rs).
mod hostile;
// Protocol robustness: hostile input through the server loop and the binary.
mod robust;

// Security: hostile IDs at each entry point, secrets never printed, credential chains.
mod security;

// Flags, environment and subcommands of the binary.
mod cli;
// Real `go build` / `go test` / `go vet` with GOCACHEPROG pointing at us.
mod go_build;
// The remote tier with the real go command, once for every store.
mod remote;
// A real fake-gcs-server for the GCS tests (harness).
mod fake_gcs;
// The GCS backend through the Backend trait, against fake-gcs-server.
mod gcs;
// A real Azure Blob Storage emulator (Azurite) for the Azure tests (harness).
mod azurite;
// A real WebDAV server (wsgidav) for the HTTP store's tests (harness).
mod webdav;
// A real S3 server (moto_server) for the S3 tests (harness).
mod moto;
// The S3 backend through the Backend trait, against moto_server.
mod s3;
// Damaged remote objects and local files, helpers killed mid-put, file permissions.
mod corruption;
// A real TCP fault proxy (toxiproxy) between the helper and a test server (harness).
mod toxiproxy;
// Network faults (toxiproxy) between the helper and S3 / GCS, with real go builds.
mod faults;
// Eight concurrent go commands on one local dir and one bucket, three rounds (figures).
mod load;
