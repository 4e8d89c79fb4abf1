//! Where credproxy keeps what must outlive a process: rotated refresh tokens, sealed
//! (AES-256-GCM) in files under `proxy.state_dir`.

pub mod sealed_file;
