//! Cache behaviour with a scripted source and paused tokio time.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;

use super::*;

/// A source that answers from a script (one entry per fetch; the last one repeats).
#[derive(Debug)]
struct Script {
    answers: Mutex<VecDeque<Result<u64, TokenError>>>,
    calls: AtomicUsize,
    delay: Duration,
    ttl: Option<Duration>,
    /// What the source was configured with (see `TokenSource::identity`).
    id: String,
}

impl Script {
    fn new(answers: Vec<Result<u64, TokenError>>, delay: Duration) -> Arc<Self> {
        Arc::new(Script {
            answers: Mutex::new(answers.into()),
            calls: AtomicUsize::new(0),
            delay,
            ttl: None,
            id: "config-1".into(),
        })
    }
    fn with_id(answers: Vec<Result<u64, TokenError>>, delay: Duration, id: &str) -> Arc<Self> {
        let mut s = Arc::try_unwrap(Self::new(answers, delay)).unwrap();
        s.id = id.into();
        Arc::new(s)
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn status(code: u16) -> TokenError {
    TokenError::Status {
        endpoint: "e".into(),
        status: code,
        detail: String::new(),
    }
}

#[async_trait]
impl TokenSource for Script {
    async fn fetch(&self, _cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let answer = {
            let mut a = self.answers.lock().unwrap();
            if a.len() > 1 {
                a.pop_front().unwrap()
            } else {
                a.front().unwrap().clone()
            }
        };
        answer.map(|secs| Fetched {
            value: Secret::new(format!("tok-{n}")),
            lifetime: Some(Duration::from_secs(secs)),
        })
    }
    fn policy(&self) -> Policy {
        Policy {
            default_lifetime: Duration::from_secs(45),
            ttl: self.ttl,
            keep: None,
        }
    }
    fn prefix(&self) -> &str {
        "Bearer "
    }
    fn endpoint(&self) -> &str {
        "e"
    }
    fn identity(&self) -> String {
        self.id.clone()
    }
}

fn cache() -> TokenCache {
    TokenCache::new(
        reqwest::Client::new(),
        Duration::from_secs(2),
        Retry {
            attempts: 3,
            base_delay: Duration::from_millis(100),
        },
    )
}

fn name() -> Arc<str> {
    Arc::from("c")
}

fn value(t: &Token) -> String {
    t.header.to_str().unwrap().to_string()
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_requests_share_one_fetch() {
    let s = Script::new(vec![Ok(3600)], Duration::from_millis(200));
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (c, src) = (c.clone(), src.clone());
        tasks.push(tokio::spawn(async move {
            c.get(&name(), &src).await.map(|t| value(&t))
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "Bearer tok-0");
    }
    assert_eq!(s.calls(), 1);
}

#[test]
fn timeline_policy() {
    let now = Instant::now();
    let p = Policy {
        default_lifetime: Duration::from_secs(45),
        ttl: None,
        keep: None,
    };
    // 3600 s: 30 s skew, refresh 5 min (cap) before the usable end.
    let (refresh, expiry) = p.timeline(now, Some(Duration::from_secs(3600)));
    assert_eq!(expiry - now, Duration::from_secs(3570));
    assert_eq!(refresh - now, Duration::from_secs(3270));
    // No lifetime given: 45 s default.
    let (_, expiry) = p.timeline(now, None);
    assert_eq!(expiry - now, Duration::from_millis(40_500));
    // cache.ttl is an upper bound, never past the token's own expiry.
    let p = Policy {
        default_lifetime: Duration::from_secs(45),
        ttl: Some(Duration::from_secs(60)),
        keep: None,
    };
    assert!(p.timeline(now, Some(Duration::from_secs(3600))).1 - now <= Duration::from_secs(60));
    assert!(p.timeline(now, Some(Duration::from_secs(20))).1 - now <= Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn expired_token_is_never_served() {
    let s = Script::new(vec![Ok(100), Err(status(400))], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    let t = c.get(&name(), &src).await.unwrap();
    let life = t.expires_at - Instant::now();
    tokio::time::advance(life + Duration::from_millis(1)).await;
    assert!(
        c.get(&name(), &src).await.is_err(),
        "expired token must not be served when the endpoint fails"
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_keeps_serving_the_valid_token() {
    let s = Script::new(vec![Ok(100)], Duration::from_millis(50));
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    let t0 = c.get(&name(), &src).await.unwrap();
    // Into the refresh window, before expiry.
    tokio::time::advance(t0.refresh_at - Instant::now() + Duration::from_millis(1)).await;
    let t = c.get(&name(), &src).await.unwrap();
    assert_eq!(
        value(&t),
        "Bearer tok-0",
        "current token served while renewing"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.calls(), 2, "one background refresh");
    let t = c.get(&name(), &src).await.unwrap();
    assert_eq!(value(&t), "Bearer tok-1");
}

#[tokio::test(start_paused = true)]
async fn failed_background_refresh_keeps_the_valid_token() {
    let s = Script::new(vec![Ok(100), Err(status(503))], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    let t0 = c.get(&name(), &src).await.unwrap();
    tokio::time::advance(t0.refresh_at - Instant::now() + Duration::from_millis(1)).await;
    assert_eq!(value(&c.get(&name(), &src).await.unwrap()), "Bearer tok-0");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(value(&c.get(&name(), &src).await.unwrap()), "Bearer tok-0");
    assert!(c
        .status(&name(), None, &src)
        .last_error
        .unwrap()
        .contains("503"));
}

#[tokio::test(start_paused = true)]
async fn retries_5xx_with_backoff_but_not_4xx() {
    let s = Script::new(
        vec![Err(status(503)), Err(status(502)), Ok(60)],
        Duration::ZERO,
    );
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    let start = Instant::now();
    assert!(c.get(&name(), &src).await.is_ok());
    assert_eq!(s.calls(), 3);
    assert!(
        Instant::now() - start >= Duration::from_millis(300),
        "100 ms then 200 ms backoff"
    );

    let s = Script::new(vec![Err(status(401)), Ok(60)], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    assert!(cache().get(&name(), &src).await.is_err());
    assert_eq!(s.calls(), 1, "401 is not retried");

    let s = Script::new(vec![Err(status(500))], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    assert!(cache().get(&name(), &src).await.is_err());
    assert_eq!(s.calls(), 3, "bounded");
}

#[tokio::test(start_paused = true)]
async fn negative_cache_spares_a_dead_endpoint() {
    let s = Script::new(vec![Err(status(400)), Ok(60)], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    for _ in 0..50 {
        assert!(c.get(&name(), &src).await.is_err());
    }
    assert_eq!(s.calls(), 1);
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(
        c.get(&name(), &src).await.is_ok(),
        "tried again after the negative TTL"
    );
    assert_eq!(s.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_shared_state_failure_is_retried_soon_after() {
    let down = TokenError::SharedState("shared state (Redis) is unreachable".into());
    let s = Script::new(vec![Err(down), Ok(60)], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    assert!(c.get(&name(), &src).await.is_err());
    assert!(c.get(&name(), &src).await.is_err(), "a storm is spared");
    assert_eq!(s.calls(), 1);
    // Well inside the 2 s negative TTL: a store that failed over is used again at once.
    tokio::time::advance(Duration::from_millis(300)).await;
    assert!(c.get(&name(), &src).await.is_ok());
    assert_eq!(s.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn refresh_drops_and_refetches() {
    let s = Script::new(vec![Ok(3600)], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    c.get(&name(), &src).await.unwrap();
    let t = c.refresh(&name(), None, &src).await.unwrap();
    assert_eq!(value(&t), "Bearer tok-1");
    assert_eq!(c.status(&name(), None, &src).fetches_ok, 2);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_unchanged_tokens_and_drops_changed_ones() {
    let a = Script::new(vec![Ok(3600)], Duration::ZERO);
    let same = Script::new(vec![Ok(3600)], Duration::ZERO);
    let changed = Script::with_id(vec![Ok(3600)], Duration::ZERO, "config-2");
    let c = cache();
    let sources: [Arc<dyn TokenSource>; 3] = [a.clone(), same.clone(), changed.clone()];
    for s in &sources {
        c.get(&name(), s).await.unwrap();
    }
    assert_eq!(
        (a.calls(), same.calls(), changed.calls()),
        (1, 0, 1),
        "an unchanged credential keeps its token; a changed one gets a new one"
    );
}

#[tokio::test(start_paused = true)]
async fn failing_background_refresh_is_negative_cached() {
    let s = Script::new(vec![Ok(100), Err(status(400))], Duration::ZERO);
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    let t0 = c.get(&name(), &src).await.unwrap();
    tokio::time::advance(t0.refresh_at - Instant::now() + Duration::from_millis(1)).await;
    for _ in 0..100 {
        c.get(&name(), &src).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 1 s of traffic in the refresh window with a 2 s negative TTL: one background attempt.
    assert_eq!(s.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn renewal_after_401_honours_the_negative_cache() {
    let s = Script::new(vec![Ok(3600), Err(status(400))], Duration::from_millis(50));
    let src: Arc<dyn TokenSource> = s.clone();
    let c = cache();
    let t0 = c.get(&name(), &src).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, src, t0) = (c.clone(), src.clone(), t0.clone());
        tasks.push(tokio::spawn(async move {
            c.renew_after_reject(&c.slot(&name(), None, &src), &t0)
                .await
                .is_err()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(
        s.calls(),
        2,
        "20 rejections with one token share one failed renewal"
    );
}

#[tokio::test(start_paused = true)]
async fn old_and_new_config_do_not_evict_each_other() {
    let a = Script::new(vec![Ok(3600)], Duration::from_millis(50));
    let b = Script::with_id(vec![Ok(3600)], Duration::from_millis(50), "config-2");
    let (sa, sb): (Arc<dyn TokenSource>, Arc<dyn TokenSource>) = (a.clone(), b.clone());
    let c = cache();
    for _ in 0..5 {
        c.get(&name(), &sa).await.unwrap();
        c.get(&name(), &sb).await.unwrap();
    }
    assert_eq!((a.calls(), b.calls()), (1, 1));
}

#[test]
fn errors_are_scrubbed_before_they_are_cut() {
    let secret = Secret::new("s3cr3t/value+x".to_string());
    let long = format!(
        "{}{}",
        "x".repeat(290),
        "s3cr3t/value+x and s3cr3t%2Fvalue%2Bx"
    );
    let e = TokenError::Status {
        endpoint: "https://t/".into(),
        status: 401,
        detail: long,
    }
    .redacted(std::slice::from_ref(&secret));
    let text = e.to_string();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.ends_with("..."), "{text}");
}

/// A source that mints one token per target host (like self-signed JWTs).
#[derive(Debug)]
struct PerHost(AtomicUsize);

#[async_trait]
impl TokenSource for PerHost {
    async fn fetch(&self, _cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Fetched {
            value: Secret::new(format!("jwt-{n}")),
            lifetime: Some(Duration::from_secs(3600)),
        })
    }
    fn policy(&self) -> Policy {
        Policy {
            default_lifetime: Duration::from_secs(300),
            ttl: None,
            keep: None,
        }
    }
    fn endpoint(&self) -> &str {
        "local"
    }
    fn per_target(&self) -> bool {
        true
    }
    fn for_target(&self, _host: &str) -> Option<Arc<dyn TokenSource>> {
        Some(Arc::new(PerHost(AtomicUsize::new(0))))
    }
}

#[tokio::test]
async fn per_target_slots_are_one_per_host_and_bounded() {
    let c = cache();
    let src: Arc<dyn TokenSource> = Arc::new(PerHost(AtomicUsize::new(0)));
    let a = c.slot_for(&name(), None, &src, "a.example");
    assert!(Arc::ptr_eq(
        &a,
        &c.slot_for(&name(), None, &src, "a.example")
    ));
    c.get_in(&a).await.unwrap();
    for i in 0..3 * TARGETS_PER_CREDENTIAL {
        let s = c.slot_for(&name(), None, &src, &format!("h{i}.example"));
        c.get_in(&s).await.unwrap();
    }
    let st = c.status(&name(), None, &src);
    assert_eq!(st.targets, TARGETS_PER_CREDENTIAL);
    assert_eq!(
        st.fetches_ok, TARGETS_PER_CREDENTIAL as u64,
        "counted over the kept hosts"
    );
    assert!(
        !Arc::ptr_eq(&a, &c.slot_for(&name(), None, &src, "a.example")),
        "the least recently used host was dropped"
    );
}
