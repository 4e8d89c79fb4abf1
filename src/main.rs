//! The `credproxy` command line: the only place that prints to stdout.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use credproxy::config;

// glibc's malloc spent ~20% of a proxied request's instructions (pingora allocates ~80 times
// per request); mimalloc's thread-local free lists cut that (BENCHMARKS.md, issue 17).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "credproxy",
    version,
    about = "Outbound proxy that injects credentials so workflows hold no secrets",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: ConfigArg,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// Config file [default: $CREDPROXY_CONFIG, else ./credentials.yaml]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines as text or one JSON object per line [default: proxy.log.format, else text]
    #[arg(long = "log-format", value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy (the default command)
    Run(ConfigArg),
    /// Validate the config and report every credential
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Do not contact token endpoints
        #[arg(long)]
        offline: bool,
    },
    /// Dry run: which route and credential would apply to a request, and what would be injected
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// HTTP method
        #[arg(short = 'X', long = "request", default_value = "GET")]
        method: String,
        /// Absolute URL (http://host/path) or a sidecar path (/prefix/...)
        url: String,
    },
    /// Print the JSON Schema of the config file
    Schema,
    /// List the provider catalog (name, auth, API hosts), or show one entry
    Providers {
        /// A provider's name, e.g. hubspot
        name: Option<String>,
    },
    /// Manage the local CA used to intercept HTTPS
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA certificate and key
    Init {
        /// Where to write ca.pem and ca.key
        #[arg(long, default_value = "ca")]
        dir: PathBuf,
        /// Replace an existing CA (clients trusting the old one will refuse credproxy)
        #[arg(long)]
        force: bool,
    },
}

/// The flag, else the config's `proxy.log.format`, else text.
fn json_logs(arg: &ConfigArg) -> bool {
    match arg.log_format {
        Some(f) => matches!(f, LogFormat::Json),
        None => {
            let path = config::default_path(arg.config.as_deref());
            config::log_format_in(&path) == Some(config::raw::LogFormat::Json)
        }
    }
}

fn load(arg: &ConfigArg) -> Result<(config::Config, PathBuf), ExitCode> {
    load_with(arg, &credproxy::sources::Sources::default())
}

fn load_with(
    arg: &ConfigArg,
    sources: &credproxy::sources::Sources,
) -> Result<(config::Config, PathBuf), ExitCode> {
    let path = config::default_path(arg.config.as_deref());
    match config::load_with(&path, sources) {
        Ok(c) => Ok((c, path)),
        Err(e) => {
            eprintln!("error: invalid config\n{e}");
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(&cli.run),
        Some(Command::Run(a)) => run(&a),
        Some(Command::Check { config, offline }) => check(&config, offline),
        Some(Command::Explain {
            config,
            method,
            url,
        }) => explain(&config, &method, &url),
        Some(Command::Schema) => match config::schema::json() {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Ca(CaCommand::Init { dir, force })) => ca_init(&dir, force),
        Some(Command::Providers { name }) => providers(name.as_deref()),
    }
}

fn providers(name: Option<&str>) -> ExitCode {
    let Some(name) = name else {
        print!("{}", credproxy::catalog::listing());
        return ExitCode::SUCCESS;
    };
    match credproxy::catalog::show(name) {
        Some(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "error: unknown provider `{name}` (known: {})",
                credproxy::catalog::names().join(", ")
            );
            ExitCode::from(2)
        }
    }
}

fn ca_init(dir: &std::path::Path, force: bool) -> ExitCode {
    let created = match credproxy::tls::ca::init(dir, force) {
        Ok(c) => c,
        // Without --force an existing CA is kept: a usage matter, like a bad flag.
        Err(e @ credproxy::tls::ca::CaError::Exists(_)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let abs = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let (cert, key) = (abs(&created.cert), abs(&created.key));
    println!(
        r#"Created the credproxy CA (ECDSA P-256, valid 10 years):
  certificate  {cert}
  private key  {key}  (mode 0600: whoever reads it can impersonate any HTTPS site to clients that trust this CA)
  SHA-256      {fp}

1. Point credproxy at it, in credentials.yaml:
     proxy:
       ca: {{ cert: {cert}, key: {key} }}

2. Make the workflows that use credproxy trust it. Hosts without a route are tunnelled and
   show their real certificates, so clients need the system roots too: where a variable
   replaces the roots, give it a bundle of both:
     cat /etc/ssl/certs/ca-certificates.crt {cert} > credproxy-bundle.pem

   curl             curl --cacert credproxy-bundle.pem ...   (or CURL_CA_BUNDLE=credproxy-bundle.pem)
   Python requests  export REQUESTS_CA_BUNDLE=$PWD/credproxy-bundle.pem
   Python ssl/httpx export SSL_CERT_FILE=$PWD/credproxy-bundle.pem
   Node.js          export NODE_EXTRA_CA_CERTS={cert}   (added to Node's own roots)
   Java             keytool -importcert -noprompt -alias credproxy -file {cert} \
                      -keystore "$JAVA_HOME/lib/security/cacerts" -storepass changeit
   Debian/Ubuntu    sudo cp {cert} /usr/local/share/ca-certificates/credproxy.crt \
                      && sudo update-ca-certificates   (system-wide: every program on the host)"#,
        fp = created.fingerprint
    );
    ExitCode::SUCCESS
}

fn run(arg: &ConfigArg) -> ExitCode {
    credproxy::logging::init(json_logs(arg));
    let sources = credproxy::sources::Sources::default();
    let (cfg, path) = match load_with(arg, &sources) {
        Ok(v) => v,
        Err(code) => return code,
    };
    credproxy::server::run(cfg, path, sources)
}

fn check(arg: &ConfigArg, offline: bool) -> ExitCode {
    let (cfg, path) = match load(arg) {
        Ok(v) => v,
        Err(code) => return code,
    };
    // Unavailable credentials are listed below, one line each: not twice.
    for w in cfg
        .warnings
        .iter()
        .filter(|w| !w.message.starts_with(config::UNAVAILABLE))
    {
        eprintln!("warning: {w}");
    }
    println!(
        "config OK: {} ({}, {})",
        path.display(),
        plural(cfg.routes.len(), "route"),
        plural(cfg.credentials.len(), "credential")
    );
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (report, all_ok) = rt.block_on(async {
        if offline {
            return credproxy::explain::check(&cfg, None).await;
        }
        match credproxy::app::token_cache(&cfg) {
            Ok(cache) => credproxy::explain::check(&cfg, Some(&cache)).await,
            Err(e) => (format!("cannot set up the HTTP client: {e}\n"), false),
        }
    });
    print!("{report}");
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn explain(arg: &ConfigArg, method: &str, url: &str) -> ExitCode {
    let (cfg, _) = match load(arg) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(credproxy::explain::explain(&cfg, method, url)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A small runtime for the commands that talk to the network once (check, explain).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        })
}
