//! Leaf certificates minted on the fly for intercepted hosts, signed by the local CA, and the
//! per-tunnel rustls server config that presents them.
//!
//! One leaf key serves every host (as mitmproxy does), so minting is one CA signature. Leaves
//! are cached per host in a bounded LRU; concurrent handshakes for a new host mint once.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use time::{Duration, OffsetDateTime};

use super::ca::Ca;

/// How long a minted leaf is valid; it is re-minted once less than a quarter remains.
const LEAF_VALIDITY: Duration = Duration::days(1);
/// Clock skew allowance for clients whose clock runs behind.
const BACKDATE: Duration = Duration::hours(1);
/// Hosts whose leaves are kept.
const CACHE_HOSTS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot create the leaf key: {0}")]
    Key(String),
    #[error("cannot mint a certificate for `{0}`: {1}")]
    Mint(String, String),
    #[error("the CA in proxy.ca expired on {0}: HTTPS interception is off until it is replaced (`credproxy ca init --force`)")]
    CaExpired(OffsetDateTime),
}

/// A minted leaf with its validity period.
#[derive(Clone)]
struct Leaf {
    key: Arc<CertifiedKey>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Leaf {
    /// Still worth presenting: more than a quarter of its own validity left (a leaf cut short
    /// by the CA's end is judged by what it got, so the cache keeps working then).
    fn fresh(&self, now: OffsetDateTime) -> bool {
        self.not_after - now > (self.not_after - self.not_before) / 4
    }
}

type Minted = Result<Leaf, String>;

/// The CA plus the leaf cache: what interception needs, built once per config load.
pub struct Interceptor {
    ca: Ca,
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<LruCache<String, Arc<OnceLock<Minted>>>>,
    sessions: Arc<dyn StoresServerSessions>,
    mints: AtomicU64,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("ca", &self.ca)
            .field("mints", &self.mints.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    pub fn new(ca: Ca) -> Result<Self, MintError> {
        let leaf_key = KeyPair::generate().map_err(|e| MintError::Key(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let leaf_signer = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| MintError::Key(e.to_string()))?;
        Ok(Interceptor {
            ca,
            leaf_key,
            leaf_signer,
            provider,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_HOSTS).unwrap_or(NonZeroUsize::MIN),
            )),
            sessions: rustls::server::ServerSessionMemoryCache::new(4096),
            mints: AtomicU64::new(0),
        })
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Leaves minted since this config was loaded.
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// The server config for one tunnel to `host` (normalised, IPv6 without brackets): presents
    /// the leaf for `host`, and refuses a ClientHello whose SNI names another host.
    pub fn server_config(self: &Arc<Self>, host: &str) -> Result<Arc<ServerConfig>, String> {
        let resolver = TunnelResolver {
            interceptor: self.clone(),
            host: host.to_string(),
        };
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.session_storage = self.sessions.clone();
        Ok(Arc::new(cfg))
    }

    /// The cached leaf for `host`, minting it (once, whoever asks concurrently) when missing or
    /// near its end.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, String> {
        let now = OffsetDateTime::now_utc();
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = cache.get(host).filter(|c| match c.get() {
                Some(Ok(leaf)) => leaf.fresh(now),
                Some(Err(_)) => false,
                None => true, // being minted
            });
            match fresh {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(OnceLock::new());
                    cache.put(host.to_string(), c.clone());
                    c
                }
            }
        };
        cell.get_or_init(|| self.mint(host, now).map_err(|e| e.to_string()))
            .as_ref()
            .map(|leaf| leaf.key.clone())
            .map_err(Clone::clone)
    }

    fn mint(&self, host: &str, now: OffsetDateTime) -> Result<Leaf, MintError> {
        if now >= self.ca.not_after {
            return Err(MintError::CaExpired(self.ca.not_after));
        }
        let fail = |e: rcgen::Error| MintError::Mint(host.to_string(), e.to_string());
        let mut p = CertificateParams::new(vec![host.to_string()]).map_err(fail)?;
        let mut dn = DistinguishedName::new();
        if host.len() <= 64 {
            dn.push(DnType::CommonName, host);
        }
        p.distinguished_name = dn;
        p.not_before = now - BACKDATE;
        p.not_after = (now + LEAF_VALIDITY).min(self.ca.not_after);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(super::random_serial());
        let cert = p.signed_by(&self.leaf_key, &self.ca.issuer).map_err(fail)?;
        self.mints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host, "minted interception certificate");
        let chain = vec![cert.der().clone(), self.ca.cert.clone()];
        Ok(Leaf {
            key: Arc::new(CertifiedKey::new(chain, self.leaf_signer.clone())),
            not_before: p.not_before,
            not_after: p.not_after,
        })
    }
}

/// Picks the leaf for one tunnel.
#[derive(Debug)]
struct TunnelResolver {
    interceptor: Arc<Interceptor>,
    host: String,
}

impl ResolvesServerCert for TunnelResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.trim_end_matches('.');
            if !sni.eq_ignore_ascii_case(&self.host) {
                // The tunnel was authorised for its CONNECT host; a different name inside it
                // would get a certificate (and a credential) for a host nobody asked for.
                tracing::warn!(connect = %self.host, sni, "TLS SNI does not match the CONNECT host; handshake refused");
                return None;
            }
        }
        match self.interceptor.leaf(&self.host) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(host = %self.host, "{e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interceptor() -> (tempfile::TempDir, Arc<Interceptor>) {
        let d = tempfile::tempdir().unwrap();
        let c = super::super::ca::init(d.path(), false).unwrap();
        let ca = super::super::ca::load(&c.cert, &c.key).unwrap();
        (d, Arc::new(Interceptor::new(ca).unwrap()))
    }

    fn parse(k: &CertifiedKey) -> (Vec<String>, i64) {
        let (_, x) = x509_parser::parse_x509_certificate(&k.cert[0]).unwrap();
        let sans = x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|g| format!("{g}"))
            .collect();
        let v = x.validity();
        (sans, v.not_after.timestamp() - v.not_before.timestamp())
    }

    #[test]
    fn leaves_have_the_right_san_and_short_validity() {
        let (_d, i) = interceptor();
        let (sans, secs) = parse(&i.leaf("api.example.com").unwrap());
        assert_eq!(sans, ["DNSName(api.example.com)"]);
        assert_eq!(secs, (LEAF_VALIDITY + BACKDATE).whole_seconds());
        let (sans, _) = parse(&i.leaf("127.0.0.1").unwrap());
        assert_eq!(sans, ["IPAddress(7f:00:00:01)"]);
        let (sans, _) = parse(&i.leaf("::1").unwrap());
        assert_eq!(sans.len(), 1);
        assert!(sans[0].starts_with("IPAddress("), "{sans:?}");
    }

    /// What a client does: chain the leaf to the CA and check the name.
    fn verify(ca: &[u8], leaf: &CertifiedKey, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.to_vec().into()).unwrap();
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        v.verify_server_cert(
            &leaf.cert[0],
            &leaf.cert[1..],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
    }

    #[test]
    fn leaves_verify_against_our_ca_and_an_openssl_rsa_ca() {
        let (_d, i) = interceptor();
        let ca = i.ca().cert.to_vec();
        let leaf = i.leaf("api.example.com").unwrap();
        verify(&ca, &leaf, "api.example.com").unwrap();
        assert!(verify(&ca, &leaf, "other.example.com").is_err());
        verify(&ca, &i.leaf("127.0.0.1").unwrap(), "127.0.0.1").unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tls/testdata");
        let rsa = super::super::ca::load(&dir.join("rsa.pem"), &dir.join("rsa.key")).unwrap();
        let rsa_der = rsa.cert.to_vec();
        let i = Interceptor::new(rsa).unwrap();
        verify(
            &rsa_der,
            &i.leaf("api.example.com").unwrap(),
            "api.example.com",
        )
        .unwrap();
    }

    #[test]
    fn cached_per_host_and_minted_once_under_concurrency() {
        let (_d, i) = interceptor();
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let i = i.clone();
                std::thread::spawn(move || i.leaf("concurrent.test").unwrap())
            })
            .collect();
        let keys: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(i.mints(), 1);
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
        i.leaf("other.test").unwrap();
        assert_eq!(i.mints(), 2);
    }

    #[test]
    fn freshness_is_judged_by_the_leafs_own_validity() {
        let now = OffsetDateTime::now_utc();
        let leaf = |hours_before: i64, hours_after: i64| Leaf {
            key: interceptor().1.leaf("x.test").unwrap(),
            not_before: now - Duration::hours(hours_before),
            not_after: now + Duration::hours(hours_after),
        };
        assert!(leaf(1, 24).fresh(now));
        assert!(!leaf(20, 5).fresh(now));
        // Cut short by a CA ending in 3 hours: still cached.
        assert!(leaf(1, 3).fresh(now));
        assert!(!leaf(24, 0).fresh(now));
    }

    #[test]
    fn cache_is_bounded() {
        let (_d, i) = interceptor();
        for n in 0..CACHE_HOSTS + 10 {
            i.leaf(&format!("h{n}.test")).unwrap();
        }
        assert_eq!(i.cache.lock().unwrap().len(), CACHE_HOSTS);
        // The oldest were evicted and are minted again.
        let before = i.mints();
        i.leaf("h0.test").unwrap();
        assert_eq!(i.mints(), before + 1);
    }
}
