//! `exec:` sources: run a helper (no shell, minimal environment, a timeout) and read its stdout.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use super::Fetched;

/// Longest stderr excerpt kept in an error.
const STDERR_KEPT: usize = 400;

/// Runs `argv` with PATH, HOME and the `env` allow-list only.
pub async fn run(argv: &[String], env: &[String], timeout: Duration) -> Result<Fetched, String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("no program to run".to_string());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in ["PATH", "HOME"]
        .iter()
        .copied()
        .chain(env.iter().map(String::as_str))
    {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{prog}`: {e}"))?;
    let out = match tokio::time::timeout(timeout, bounded_output(child)).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("`{prog}` failed: {e}")),
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => return Err(format!("`{prog}` did not finish within {timeout:?}")),
    };
    if out.stdout.len() > MAX_OUTPUT {
        return Err(format!(
            "`{prog}` printed more than {MAX_OUTPUT} bytes on stdout"
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = format!("`{prog}` exited with {}: {}", out.status, excerpt(&stderr));
        return Err(redact(&msg, &stdout));
    }
    parse_output(prog, &stdout)
}

/// Most a helper may print on stdout or stderr: a runaway one cannot fill the proxy's memory.
const MAX_OUTPUT: usize = 1 << 20;

struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Reads at most `MAX_OUTPUT` + 1 bytes of each stream (then kills the helper), and its status.
async fn bounded_output(mut child: tokio::process::Child) -> std::io::Result<Output> {
    use tokio::io::AsyncReadExt;
    async fn read(s: Option<impl tokio::io::AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        if let Some(s) = s {
            s.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut buf).await?;
        }
        Ok(buf)
    }
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let (stdout, stderr) = tokio::try_join!(read(out), read(err))?;
    if stdout.len() > MAX_OUTPUT || stderr.len() > MAX_OUTPUT {
        let _ = child.start_kill();
    }
    let status = child.wait().await?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Plain text (trimmed), or `{ "value": ..., "expires_at": RFC 3339 }`.
pub fn parse_output(prog: &str, stdout: &str) -> Result<Fetched, String> {
    let text = stdout.trim();
    if text.starts_with('{') {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(text) {
            return from_object(prog, &o);
        }
    }
    if text.is_empty() {
        return Err(format!("`{prog}` printed nothing on stdout"));
    }
    Ok(Fetched {
        value: text.to_string(),
        expires_at: None,
    })
}

fn from_object(
    prog: &str,
    o: &serde_json::Map<String, serde_json::Value>,
) -> Result<Fetched, String> {
    let Some(value) = o.get("value").and_then(|v| v.as_str()) else {
        return Err(format!(
            "`{prog}` printed a JSON object without a string `value`"
        ));
    };
    let expires_at = match o.get("expires_at") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(rfc3339(t).ok_or_else(|| {
            format!("`{prog}` printed an `expires_at` that is not RFC 3339: {t}")
        })?),
        Some(_) => {
            return Err(format!(
                "`{prog}` printed an `expires_at` that is not a string"
            ))
        }
    };
    Ok(Fetched {
        value: value.trim().to_string(),
        expires_at,
    })
}

pub fn rfc3339(t: &str) -> Option<SystemTime> {
    let fmt = time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(t, &fmt).ok()?;
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The first lines of stderr, bounded, on one line.
fn excerpt(stderr: &str) -> String {
    let one_line: String = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(STDERR_KEPT) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None if one_line.is_empty() => "(no stderr)".to_string(),
        None => one_line,
    }
}

/// Removes whatever the helper printed on stdout (a secret, perhaps) from a message about it.
fn redact(msg: &str, stdout: &str) -> String {
    let mut out = msg.to_string();
    let mut pieces: Vec<&str> = stdout.split_whitespace().filter(|p| p.len() >= 4).collect();
    pieces.push(stdout.trim());
    // Longest first, so a whole value is replaced before any part of it.
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in pieces.into_iter().filter(|p| !p.is_empty()) {
        out = out.replace(p, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_json_output() {
        let f = parse_output("op", "  s3cret-value\n").unwrap();
        assert_eq!(f.value, "s3cret-value");
        assert!(f.expires_at.is_none());
        let f = parse_output(
            "gcloud",
            r#"{"value":"ya29.x","expires_at":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(f.value, "ya29.x");
        assert_eq!(
            f.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        assert!(parse_output("x", "{\"token\": 1}")
            .unwrap_err()
            .contains("`value`"));
        let bad = parse_output("x", r#"{"value":"v","expires_at":"tomorrow"}"#);
        assert!(bad.unwrap_err().contains("RFC 3339"));
        assert!(parse_output("x", "\n").unwrap_err().contains("nothing"));
    }

    #[test]
    fn stdout_is_redacted_from_errors() {
        let msg = "`h` exited with 1: failed after printing hunter2-long and more";
        assert_eq!(
            redact(msg, "hunter2-long\n"),
            "`h` exited with 1: failed after printing *** and more"
        );
    }

    #[tokio::test]
    async fn runs_without_a_shell_and_with_a_minimal_environment() {
        std::env::set_var("CREDPROXY_EXEC_TEST_HIDDEN", "no");
        let argv = [
            "sh",
            "-c",
            "echo \"$CREDPROXY_EXEC_TEST_HIDDEN|$HOME\"; echo '$(x)' >&2",
        ];
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let f = run(&argv, &[], Duration::from_secs(5)).await.unwrap();
        assert!(f.value.starts_with('|'), "{}", f.value);
        let env = vec!["CREDPROXY_EXEC_TEST_HIDDEN".to_string()];
        let f = run(&argv, &env, Duration::from_secs(5)).await.unwrap();
        assert!(f.value.starts_with("no|"), "{}", f.value);
    }

    #[tokio::test]
    async fn failures_say_why_without_the_output() {
        let argv: Vec<String> = [
            "sh",
            "-c",
            "echo leaked-value; echo 'denied: leaked-value' >&2; exit 3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = run(&argv, &[], Duration::from_secs(5)).await.unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.contains("denied: ***"),
            "{e}"
        );
        assert!(!e.contains("leaked-value"), "{e}");
        let slow: Vec<String> = ["sleep", "5"].iter().map(|s| s.to_string()).collect();
        let e = run(&slow, &[], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        let flood: Vec<String> = ["yes", "credproxy"].iter().map(|s| s.to_string()).collect();
        let e = run(&flood, &[], Duration::from_secs(10)).await.unwrap_err();
        assert!(e.contains("printed more than 1048576 bytes"), "{e}");
        let e = run(
            &["/nonexistent/helper".to_string()],
            &[],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }
}
