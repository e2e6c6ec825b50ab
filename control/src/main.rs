use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use xstack_control::config::{Cli, Config};
use xstack_control::daemon;

/// XSTACK_LOG as tracing reads it, or why it is not a filter: a bare word
/// that is no level (`dbug`) would be taken for a target name and silence
/// every line.
fn log_filter() -> (EnvFilter, Option<String>) {
    let Ok(v) = std::env::var("XSTACK_LOG") else { return (EnvFilter::new("info"), None) };
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = v
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty() && !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()));
    if let Some(d) = bad {
        return (
            EnvFilter::new("info"),
            Some(format!(
                "XSTACK_LOG={v}: {d:?} is not a level ({}) nor TARGET=LEVEL; logging at info",
                LEVELS.join(", ")
            )),
        );
    }
    match EnvFilter::try_new(&v) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(format!("XSTACK_LOG={v}: {e}; logging at info"))),
    }
}

fn main() {
    let (filter, complaint) = log_filter();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: not into log files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    if let Some(c) = complaint {
        tracing::warn!("{c}");
    }
    if let Err(e) = real_main() {
        eprintln!("xstackd: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "xstackd", &mut std::io::stdout());
        return Ok(());
    }
    let cfg = Config::load(&cli)?;
    if cli.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let summary = daemon::run(&cfg, stop)?;
    match &summary.client {
        // Client mode: stdout carries the client's lines; exit status says
        // whether it worked.
        Some(outcome) => {
            eprint!("{}", summary.render());
            if outcome.is_err() {
                std::process::exit(1);
            }
        }
        None => print!("{}", summary.render()),
    }
    Ok(())
}
