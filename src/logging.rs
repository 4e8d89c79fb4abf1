//! Log output: the tracing subscriber and the `log` facade that pingora writes through.

/// Installs the subscriber: RUST_LOG or the default filter, text or JSON lines on stderr.
pub fn init(json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::prelude::*;
    // pingora's own start-up chatter (bootstrap, services) is left out unless RUST_LOG asks.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
    });
    // pingora's debug and trace events include raw request bytes, injected credentials
    // among them, and aws-sigv4 traces canonical requests (session token included): cap both
    // at INFO whatever RUST_LOG asks for.
    let no_pingora_wire = tracing_subscriber::filter::filter_fn(|m| {
        !((m.target().starts_with("pingora") || m.target().starts_with("aws_sigv4"))
            && *m.level() > tracing::Level::INFO)
    });
    // Colour only for a person at a terminal (https://no-color.org).
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match json {
        // One object per line, the event's fields at the top level beside time, level,
        // target and message.
        true => layer.json().flatten_event(true).boxed(),
        false => layer.with_ansi(ansi).boxed(),
    };
    let max = filter.max_level_hint();
    tracing_subscriber::registry()
        // One filter made of both, not one filtered layer inside another: nested, the outer
        // filter answered `enabled!` alone, so callers built records (the access line's
        // fields) that the inner filter then dropped.
        .with(layer.with_filter(filter.and(no_pingora_wire)))
        .init();
    // `init` opened the `log` facade to every level, so each of pingora's `debug!` and
    // `trace!` calls on the request path (made through `log`) built a record, crossed into
    // tracing and was dropped by the filter there: ~3% of a request's CPU. Close it at the
    // filter's own level instead.
    log::set_max_level(max.map_or(log::LevelFilter::Trace, as_log));
}

fn as_log(l: tracing::level_filters::LevelFilter) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter as T;
    match l {
        T::OFF => log::LevelFilter::Off,
        T::ERROR => log::LevelFilter::Error,
        T::WARN => log::LevelFilter::Warn,
        T::INFO => log::LevelFilter::Info,
        T::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}
