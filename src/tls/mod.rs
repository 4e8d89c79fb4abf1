//! HTTPS interception: the local CA (`ca init`, loading), leaf certificates minted per host,
//! and the roots origins are verified against.

pub mod ca;
mod leaf;
pub mod roots;

pub use ca::{Ca, CaError};
pub use leaf::{Interceptor, MintError};

/// A random positive 16-byte serial, as CAs use (RFC 5280 allows up to 20 octets).
fn random_serial() -> rcgen::SerialNumber {
    let mut b = [0u8; 16];
    // ring's SystemRandom only fails when the OS has no randomness; a zero serial still works.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[0] &= 0x7f;
    b[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&b)
}
