use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use xstack_control::config::{Cli, Config};
use xstack_control::daemon;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("XSTACK_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(e) = real_main() {
        eprintln!("xstackd: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
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
