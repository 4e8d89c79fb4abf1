use super::*;

fn file_spec(path: &std::path::Path, refresh_ms: u64, max_stale_ms: u64) -> Arc<SourceSpec> {
    Arc::new(SourceSpec {
        origin: Origin::File(path.to_path_buf()),
        refresh: Duration::from_millis(refresh_ms),
        max_stale: Duration::from_millis(max_stale_ms),
        timeout: Duration::from_secs(1),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_value_is_noticed_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    std::fs::write(&p, "one\n").unwrap();
    let sources = Sources::default();
    let spec = file_spec(&p, 1, 60_000);
    assert_eq!(sources.get(&spec).unwrap().expose(), "one");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!sources.refresh(false).await, "unchanged");
    std::fs::write(&p, "two\n").unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(sources.refresh(false).await, "changed");
    assert_eq!(sources.get(&spec).unwrap().expose(), "two");
    assert_eq!(sources.status(&[spec])[0].status, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_read_keeps_the_last_value_until_max_stale() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    std::fs::write(&p, "good").unwrap();
    let sources = Sources::default();
    let spec = file_spec(&p, 1, 300);
    sources.get(&spec).unwrap();
    std::fs::remove_file(&p).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!sources.refresh(true).await, "still serving the last value");
    assert_eq!(sources.get(&spec).unwrap().expose(), "good");
    let st = &sources.status(std::slice::from_ref(&spec))[0];
    assert_eq!(st.status, "stale");
    assert!(st.error.as_deref().unwrap().contains("cannot read"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        sources.refresh(true).await,
        "past max_stale: the value is dropped"
    );
    let e = sources.get(&spec).unwrap_err().to_string();
    assert!(e.contains("cannot read"), "{e}");
    assert_eq!(sources.status(&[spec])[0].status, "failed");
}

#[test]
fn a_first_read_that_fails_is_an_unavailable_secret() {
    let sources = Sources::default();
    let spec = file_spec(std::path::Path::new("/nonexistent/secret"), 1000, 1000);
    let e = sources.get(&spec).unwrap_err();
    assert!(matches!(e, SecretError::Unusable { .. }), "{e:?}");
    assert!(e.to_string().contains("file:/nonexistent/secret"), "{e}");
}

#[test]
fn unused_sources_are_forgotten_after_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    std::fs::write(&p, "v").unwrap();
    let sources = Sources::default();
    let spec = file_spec(&p, 1000, 1000);
    sources.get(&spec).unwrap();
    sources.begin_build();
    sources.forget_unused();
    assert!(sources.all_status().is_empty());
}

#[test]
fn expiring_values_are_read_before_they_run_out() {
    let hour = Duration::from_secs(3600);
    assert_eq!(next_read(hour, None), hour);
    let in_10m = SystemTime::now() + Duration::from_secs(600);
    let next = next_read(hour, Some(in_10m));
    assert!(
        next <= Duration::from_secs(540) && next >= Duration::from_secs(530),
        "{next:?}"
    );
    // Already expired: soon, but not in a loop.
    assert_eq!(
        next_read(hour, Some(SystemTime::UNIX_EPOCH)),
        Duration::from_secs(1)
    );
}

#[test]
fn a_bad_source_in_the_config_names_its_key_and_line() {
    let text = "credentials:\n  gh:\n    type: bearer\n    token: { exec: [], refresh: 1m }\nroutes:\n  - { host: api.github.com, credential: gh }\n";
    let errs = crate::config::load_str(text, std::path::Path::new("c.yaml"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(errs.contains("credentials.gh"), "{errs}");
    assert!(errs.contains("`exec` needs a program"), "{errs}");
    assert!(errs.contains("c.yaml:4"), "{errs}");
}

#[test]
fn a_source_value_is_used_and_reported_by_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tok"), "from-a-source\n").unwrap();
    let text = "credentials:\n  gh: { type: bearer, token: { file: tok, refresh: 1m } }\nroutes:\n  - { host: api.github.com, credential: gh }\n";
    let sources = Sources::default();
    let file = dir.path().join("c.yaml");
    let c = crate::config::load_text(text, &file, &|_| None, &sources).unwrap();
    assert!(c.credentials[0].credential.is_ok());
    let st = sources.status(&c.credentials[0].sources);
    assert_eq!(st.len(), 1);
    assert_eq!(
        st[0].source,
        format!("file:{}", dir.path().join("tok").display())
    );
}
