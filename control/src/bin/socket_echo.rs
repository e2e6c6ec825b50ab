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

use anyhow::Result;
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let mut args: Vec<String> = std::env::args().collect();
    const USAGE: &str = "usage: xstack-socket-echo PORT -i IFNAME -a ADDR/PREFIX [xstackd options...]\n\
                         An echo server on the stack, a thread per connection (the socket API for threads).\n\
                         The xstackd options are those of `xstackd --help`.";
    if args.len() < 2 || matches!(args[1].as_str(), "-h" | "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let port: u16 = match args[1].parse() {
        Ok(p) if p != 0 => p,
        _ => anyhow::bail!("PORT must be a number from 1 to 65535, not {:?}\n{USAGE}", args[1]),
    };
    args.remove(1);
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
            // The stack ended before serving: its own error is the cause
            // (the bind only saw the workers go).
            Err(e) if stack.is_finished() => match stack.join() {
                Ok(Err(cause)) => return Err(cause.context("the stack stopped before listening")),
                Ok(Ok(_)) => anyhow::bail!("the stack stopped before listening ({e})"),
                Err(_) => anyhow::bail!("the stack thread panicked before listening"),
            },
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
