//! The CONNECT head parser and the host:port splitter never panic, and a parsed head's
//! length never exceeds the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, len))) = credproxy::proxy::connect_head::parse(data) {
        assert!(len <= data.len());
        let _ = credproxy::routing::split_host_port(&head.authority);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = credproxy::routing::split_host_port(text);
        let _ = credproxy::routing::normalize_host(text);
    }
});
