//! Human-written durations (`45s`, `5m`, `1h30m`, `250ms`) and sizes (`64KiB`, `16MiB`).

use std::time::Duration;

/// Parses `250ms`, `45s`, `5m`, `1h`, `2d` and concatenations such as `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number, e.g. 45s, 5m, 1h"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_secs = match &rest[..unit_len] {
            "ms" => None,
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86400),
            "" => {
                return Err(format!(
                    "invalid duration `{text}`: missing unit (ms, s, m, h, d)"
                ))
            }
            u => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{u}` (ms, s, m, h, d)"
                ))
            }
        };
        rest = &rest[unit_len..];
        let part = match unit_secs {
            None => Duration::from_millis(n),
            Some(mult) => n
                .checked_mul(mult)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("invalid duration `{text}`: too large"))?,
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration `{text}`: too large"))?;
    }
    Ok(total)
}

/// Parses a byte size: `1024`, `64KiB`, `16MiB`, `1GiB`, `10KB`, `5MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "invalid size `{text}`: expected a number, e.g. 64KiB, 16MiB"
        ));
    }
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("invalid size `{text}`: number too large"))?;
    let mult: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{u}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size `{text}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        for bad in ["", "s", "45", "45x", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        for bad in ["", "MiB", "1.5MiB", "10 parsecs", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
