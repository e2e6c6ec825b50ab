//! An echo server written against the socket API for ordinary threads,
//! running on the real stack (AF_XDP, XDP program, ARP: everything
//! `xstackd` does), one thread per connection with blocking calls:
//!
//! ```sh
//! sudo target/release/xstack-socket-echo PORT -i IFNAME -a ADDR/PREFIX [xstackd options...]
//! ```
//!
//! The daemon's workers run the TCP stack; this program's threads use
//! `TcpListener`/`TcpStream` (std::io::Read/Write) on it, through the
//! lock-free rings of `xstack_dataplane::sockets`. It prints
//! `xstack-socket-echo listening on PORT` once it accepts, and stops on
//! SIGINT/SIGTERM (blocked calls then fail with ECONNABORTED).

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use xstack_control::config::{Cli, Config};
use xstack_control::daemon;
use xstack_dataplane::sockets::{self, TcpListener, TcpStream};
use xstack_dataplane::tcp::Shutdown;
use xstack_dataplane::wire::Ipv4Addr;

/// Echoes until the peer half-closes, then half-closes too.
fn echo(mut s: TcpStream) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
    s.shutdown(Shutdown::Write).map_err(std::io::Error::from)?;
    Ok(total)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let mut args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        anyhow::bail!("usage: xstack-socket-echo PORT [xstackd options...]");
    }
    let port: u16 = args.remove(1).parse().context("PORT")?;
    let cfg = Config::load(&Cli::parse_from(&args))?;
    let (handle, bridges) = sockets::new(cfg.queues as usize, sockets::Config::default());
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let stack = std::thread::spawn(move || daemon::run_with_sockets(&cfg, stop, bridges));
    // The workers answer once they run: bind retries until then.
    let listener = loop {
        match TcpListener::bind(&handle, Ipv4Addr::UNSPECIFIED, port, 128) {
            Ok(l) => break l,
            Err(e) if stack.is_finished() => anyhow::bail!("the stack stopped: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    println!("xstack-socket-echo listening on {port}");
    std::thread::spawn(move || loop {
        match listener.accept() {
            Ok((s, (ip, p))) => {
                std::thread::spawn(move || match echo(s) {
                    Ok(n) => eprintln!("xstack-socket-echo: {ip}:{p} echoed {n} bytes"),
                    Err(e) => eprintln!("xstack-socket-echo: {ip}:{p}: {e}"),
                });
            }
            Err(e) => {
                eprintln!("xstack-socket-echo: accept: {e}");
                return;
            }
        }
    });
    let summary = stack.join().map_err(|_| anyhow::anyhow!("the stack thread panicked"))??;
    print!("{}", summary.render());
    Ok(())
}
