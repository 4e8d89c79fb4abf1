//! Sealed files: encrypted, crash-safe files holding rotated refresh tokens.
//!
//! Format: a sealed JSON document (see `seal`), with the credential name as associated data,
//! so a file copied to another credential's name does not decrypt. Writes are atomic:
//! a temp file (mode 0600) is written and fsynced, renamed over the old file, and the directory
//! is fsynced, so a crash at any moment leaves either the old or the new token on disk.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::seal::Sealer;

/// Makes temp-file names unique within the process (two saves must never share one).
static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub const KEY_ENV: &str = "CREDPROXY_STATE_KEY";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("{KEY_ENV} is not set: refresh-token credentials need it to persist rotated tokens (32 random bytes, base64 or hex)")]
    NoKey,
    #[error("{KEY_ENV} must be 32 bytes, as 64 hex digits or base64")]
    BadKey,
    #[error("state file {0} cannot be decrypted (corrupted, or written under another {KEY_ENV}); it is left untouched: restore the key or move the file away to start from the seed")]
    Undecryptable(String),
    #[error("cannot read state file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write state file {path}: {reason}")]
    Write { path: String, reason: String },
}

/// What a state file holds.
#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub refresh_token: String,
    /// SHA-256 of the seed this chain started from; a new seed in the config starts a new chain.
    pub seed_sha256: String,
    pub updated_at: u64,
    /// Rotations since the seed: a fleet commits the chain in order of this number.
    #[serde(default)]
    pub version: u64,
    /// When the provider said this refresh token expires (seconds since the epoch).
    #[serde(default)]
    pub expires_at: Option<u64>,
}

pub struct SealedFile {
    path: PathBuf,
    /// What the file is bound to (its credential, and tenant): a file moved elsewhere does not
    /// open.
    aad: Vec<u8>,
    sealer: Sealer,
    /// Tests make saves fail (root ignores read-only directories).
    #[cfg(test)]
    pub fail_saves: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Parses `CREDPROXY_STATE_KEY`: 64 hex digits or base64 of 32 bytes.
pub fn parse_key(text: &str) -> Result<[u8; 32], SealError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| SealError::BadKey))
            .collect::<Result<Vec<u8>, _>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|_| SealError::BadKey)?
    };
    bytes.try_into().map_err(|_| SealError::BadKey)
}

impl SealedFile {
    pub fn new(dir: &Path, name: &str, key: &[u8; 32]) -> Result<Self, SealError> {
        Self::at(
            dir.join(format!("{name}.state")),
            name.as_bytes().to_vec(),
            key,
        )
    }

    /// The chain file of a tenant's connection: `tenants/TENANT/CREDENTIAL.state`, bound to
    /// both names.
    pub fn for_tenant(
        state_dir: &Path,
        credential: &str,
        tenant: &str,
        key: &[u8; 32],
    ) -> Result<Self, SealError> {
        let path = tenant_dir(state_dir, tenant).join(format!("{credential}.state"));
        Self::at(path, format!("{credential}|{tenant}").into_bytes(), key)
    }

    /// A file at `path` bound to `aad`.
    pub fn at(path: PathBuf, aad: Vec<u8>, key: &[u8; 32]) -> Result<Self, SealError> {
        Ok(SealedFile {
            path,
            aad,
            sealer: Sealer::new(key).ok_or(SealError::BadKey)?,
            #[cfg(test)]
            fail_saves: Default::default(),
        })
    }

    /// Deletes the file (a connection removed); absent is fine.
    pub fn remove(&self) -> Result<(), SealError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SealError::Write {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, None when there is no file yet.
    pub fn load(&self) -> Result<Option<Saved>, SealError> {
        self.load_json()
    }

    /// Encrypts and replaces the file atomically.
    pub fn save(&self, saved: &Saved) -> Result<(), SealError> {
        self.save_json(saved)
    }

    /// The file's JSON document, None when there is no file yet.
    pub fn load_json<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, SealError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(SealError::Read {
                    path: self.path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        let undecryptable = || SealError::Undecryptable(self.path.display().to_string());
        let plain = self
            .sealer
            .open(&self.aad, &data)
            .ok_or_else(undecryptable)?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|_| undecryptable())
    }

    /// Encrypts `doc` and replaces the file atomically.
    pub fn save_json<T: Serialize>(&self, doc: &T) -> Result<(), SealError> {
        let werr = |e: std::io::Error| SealError::Write {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        #[cfg(test)]
        if self.fail_saves.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(werr(std::io::Error::other("disk full (test)")));
        }
        let plain = serde_json::to_vec(doc).map_err(|e| werr(std::io::Error::other(e)))?;
        let sealed = self
            .sealer
            .seal(&self.aad, &plain)
            .ok_or_else(|| werr(std::io::Error::other("encryption failed")))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(werr)?;
        let seq = TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file_name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{file_name}.tmp-{}-{seq}", std::process::id()));
        let mut f = open_private(&tmp).map_err(werr)?;
        f.write_all(&sealed).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(werr)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)
    }
}

/// Where a tenant's files live under `state_dir`.
pub fn tenant_dir(state_dir: &Path, tenant: &str) -> PathBuf {
    state_dir.join("tenants").join(tenant)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(rt: &str) -> Saved {
        Saved {
            refresh_token: rt.into(),
            seed_sha256: "s".into(),
            updated_at: 1,
            version: 1,
            expires_at: None,
        }
    }

    #[test]
    fn round_trip_private_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let f = SealedFile::new(dir.path(), "hub", &[7; 32]).unwrap();
        assert!(f.load().unwrap().is_none());
        f.save(&saved("rt-secret-1")).unwrap();
        assert_eq!(f.load().unwrap().unwrap().refresh_token, "rt-secret-1");
        let raw = std::fs::read(f.path()).unwrap();
        assert!(
            !raw.windows(11).any(|w| w == b"rt-secret-1"),
            "encrypted at rest"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        f.save(&saved("rt-secret-2")).unwrap();
        assert_eq!(f.load().unwrap().unwrap().refresh_token, "rt-secret-2");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left behind"
        );
    }

    #[test]
    fn foreign_key_corruption_and_moved_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        SealedFile::new(dir.path(), "hub", &[7; 32])
            .unwrap()
            .save(&saved("rt"))
            .unwrap();
        let other_key = SealedFile::new(dir.path(), "hub", &[8; 32]).unwrap();
        assert!(matches!(other_key.load(), Err(SealError::Undecryptable(_))));
        std::fs::copy(dir.path().join("hub.state"), dir.path().join("evil.state")).unwrap();
        let moved = SealedFile::new(dir.path(), "evil", &[7; 32]).unwrap();
        assert!(
            matches!(moved.load(), Err(SealError::Undecryptable(_))),
            "bound to the credential name"
        );
        let mut data = std::fs::read(dir.path().join("hub.state")).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(dir.path().join("hub.state"), &data).unwrap();
        let same = SealedFile::new(dir.path(), "hub", &[7; 32]).unwrap();
        assert!(matches!(same.load(), Err(SealError::Undecryptable(_))));
    }

    #[test]
    fn key_formats() {
        assert_eq!(parse_key(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert_eq!(parse_key(&b64).unwrap(), [1; 32]);
        assert!(parse_key("short").is_err());
        assert!(parse_key(&base64::engine::general_purpose::STANDARD.encode([1u8; 16])).is_err());
    }
}
