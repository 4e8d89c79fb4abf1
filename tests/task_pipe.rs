#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs the unit tests of the vendored pingora-proxy's `task_pipe` (the pipe between the two
//! halves of a proxied HTTP/1 request, `vendor/README.md`): that crate's own test build needs
//! dev-dependencies the vendored copy leaves out, so the module is compiled here on its own.

/// The pipe's capacity, as pingora-proxy's `TASK_BUFFER_SIZE`.
const TASK_BUFFER_SIZE: usize = 4;

#[path = "../vendor/pingora-proxy/src/task_pipe.rs"]
mod task_pipe;
