//! Sealing: AES-256-GCM under `CREDPROXY_STATE_KEY`, with associated data that binds a sealed
//! value to where it belongs (a file's credential; a Redis value's prefix, kind, credential
//! and tenant), so a value copied elsewhere does not open.
//!
//! Format: `CPS1` | 12-byte random nonce | ciphertext and tag.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 4] = b"CPS1";

pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `plain` sealed for `aad`; None only when the system has no randomness.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .ok()?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Some(out)
    }

    /// The plaintext of `sealed` if it was sealed under this key for this `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < MAGIC.len() + NONCE_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return None;
        }
        let (nonce, body) = sealed[MAGIC.len()..].split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }

    /// A keyed digest (HMAC-SHA256), for naming things after secrets without revealing them.
    pub fn digest(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let tag = ring::hmac::sign(&k, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_own_binding() {
        let s = Sealer::new(&[7; 32]).unwrap();
        let sealed = s
            .seal(b"credproxy|token|hub|acme", b"secret-token")
            .unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"secret-token"));
        assert_eq!(
            s.open(b"credproxy|token|hub|acme", &sealed).as_deref(),
            Some(&b"secret-token"[..])
        );
        assert_eq!(s.open(b"credproxy|token|hub|other", &sealed), None);
        assert_eq!(
            Sealer::new(&[8; 32])
                .unwrap()
                .open(b"credproxy|token|hub|acme", &sealed),
            None
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(s.open(b"credproxy|token|hub|acme", &tampered), None);
    }
}
