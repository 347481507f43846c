//! Integration tests: the real binary, driven by the real `go` command.
//! One binary for all of them (faster to link); one module per area. The store suites need
//! their cargo features (default on); the suites that cover every store need them all.
//! Without them the disk-only tests still build and run.

mod net;
mod server;
mod util;

// Hostile protocol input: a seeded generator and its checks (shared with tools/src/bin/fuzz_protocol.rs).
mod hostile;
// Protocol robustness: hostile input through the server loop and the binary.
mod robust;

// Security: hostile IDs at each entry point, secrets never printed, credential chains.
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod security;

// The library's public API from async code (both tokio flavours) and plain threads, on S3.
#[cfg(feature = "s3")]
mod api;

// Flags, environment and subcommands of the binary.
mod cli;
// Real `go build` / `go test` / `go vet` with GOCACHEPROG pointing at us.
mod go_build;
// The remote tier with the real go command, once for every store.
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod remote;
// A real fake-gcs-server for the GCS tests (harness).
#[cfg(feature = "gcs")]
mod fake_gcs;
// The Backend contract, once for every store against its real server, and the directory.
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod stores;
// What only the GCS backend has, against fake-gcs-server.
#[cfg(feature = "gcs")]
mod gcs;
// A real Azure Blob Storage emulator (Azurite) for the Azure tests (harness).
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod azurite;
// A real WebDAV server (wsgidav) for the HTTP store's tests (harness).
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod webdav;
// A real S3 server (moto_server) for the S3 tests (harness).
#[cfg(feature = "s3")]
mod moto;
// What only the S3 backend has, against moto_server.
#[cfg(feature = "s3")]
mod s3;
// Damaged remote objects and local files, helpers killed mid-put, file permissions.
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod corruption;
// A real TCP fault proxy (toxiproxy) between the helper and a test server (harness).
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod toxiproxy;
// Network faults (toxiproxy) between the helper and S3 / GCS, with real go builds; a slow
// store (faults/slow.rs).
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod faults;
// Eight concurrent go commands on one local dir and one bucket, three rounds (figures).
#[cfg(all(feature = "s3", feature = "gcs", feature = "azure", feature = "http"))]
mod load;
