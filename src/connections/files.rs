//! Connections on disk: one sealed file per connection, `state_dir/tenants/TENANT/NAME.conn`,
//! bound to its credential and tenant. The only copy for one process; in a fleet, each
//! replica's copy of what Redis holds (it serves from it while Redis is away, and restores
//! Redis from it after Redis lost its data).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{valid_tenant, Record};
use crate::store::sealed_file::{tenant_dir, SealError, SealedFile};

/// A connection document: the connection, or the mark that it was deleted (so a replica that
/// missed the delete does not bring it back).
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Doc {
    Live(Record),
    Deleted { revision: u64 },
}

impl Doc {
    pub fn revision(&self) -> u64 {
        match self {
            Doc::Live(r) => r.revision,
            Doc::Deleted { revision } => *revision,
        }
    }
}

pub struct Files {
    state_dir: PathBuf,
    key: [u8; 32],
}

impl Files {
    pub fn new(state_dir: &Path, key: [u8; 32]) -> Self {
        Files {
            state_dir: state_dir.to_path_buf(),
            key,
        }
    }

    fn file(&self, credential: &str, tenant: &str) -> Result<SealedFile, SealError> {
        let path = tenant_dir(&self.state_dir, tenant).join(format!("{credential}.conn"));
        let aad = format!("connection|{credential}|{tenant}").into_bytes();
        SealedFile::at(path, aad, &self.key)
    }

    pub fn save(&self, r: &Record) -> Result<(), SealError> {
        self.file(&r.credential, &r.tenant)?.save_json(r)
    }

    /// Removes the connection and its refresh-token chain file.
    pub fn remove(&self, credential: &str, tenant: &str) -> Result<(), SealError> {
        self.file(credential, tenant)?.remove()?;
        SealedFile::for_tenant(&self.state_dir, credential, tenant, &self.key)?.remove()
    }

    /// Every connection on disk, and the files that could not be read (left untouched).
    pub fn load_all(&self) -> (Vec<Record>, Vec<String>) {
        let (mut records, mut problems) = (Vec::new(), Vec::new());
        let tenants = self.state_dir.join("tenants");
        for t in std::fs::read_dir(&tenants).into_iter().flatten().flatten() {
            let tenant = t.file_name().to_string_lossy().to_string();
            if !valid_tenant(&tenant) {
                continue;
            }
            for f in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                let Some(credential) = name.strip_suffix(".conn").filter(|n| !n.starts_with('.'))
                else {
                    continue;
                };
                match self
                    .file(credential, &tenant)
                    .and_then(|f| f.load_json::<Record>())
                {
                    Ok(Some(r)) => records.push(r),
                    Ok(None) => {}
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        (records, problems)
    }
}
