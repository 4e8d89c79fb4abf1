//! `bare_pingora` with the allocator credproxy ships (mimalloc): the framework's ceiling
//! measured on the same footing as credproxy, so that a benchmark can tell the allocator's
//! share from everything else.
//! `cargo run --release --example bare_pingora_mimalloc -- LISTEN ORIGIN [THREADS]`

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "bare_pingora.rs"]
mod bare;

fn main() {
    bare::main()
}
