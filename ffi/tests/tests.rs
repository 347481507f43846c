//! Tests of the C ABI, calling the `extern "C"` functions through their C signatures.

// The C ABI, function by function: arguments, ownership, closing, threads, serving.
mod api;
// include/gobuildcache.h is what cbindgen makes of ffi/src today.
mod header;
// The root crate's moto_server harness (a real S3 server on 127.0.0.1).
#[cfg(feature = "s3")]
#[path = "../../tests/moto.rs"]
mod moto;
// The Go Config and the README cover every library setting.
mod settings;
// Close and flush with an S3 remote: uploads land before close returns, or are reported.
#[cfg(feature = "s3")]
mod remote;

#[cfg(feature = "s3")]
#[path = "../../tests/net.rs"]
mod net;
#[cfg(feature = "s3")]
#[path = "../../tests/server.rs"]
mod server;
#[cfg(feature = "s3")]
mod util {
    pub use crate::net::{free_port, http_request};
}
