//! xstack-run: runs a program with its TCP sockets on the stack, as
//! `onload CMD` does: preloads libxstack_preload.so (found beside this
//! executable or in ../lib/xstack, or at $XSTACK_PRELOAD) and executes CMD, which then
//! registers with the running xstackd (the instance from --instance,
//! $XSTACK_INSTANCE, or the only one running).
//!
//! ```text
//! xstack-run [--instance NAME] [--spin N] [--any kernel|stack] CMD [ARGS...]
//! ```

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

fn usage() -> ! {
    eprintln!("usage: xstack-run [--instance NAME] [--spin N] [--any stack|kernel] [--quiet] CMD [ARGS...]");
    std::process::exit(2);
}

fn library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("XSTACK_PRELOAD") {
        return Some(PathBuf::from(p));
    }
    // Beside this executable (a build tree), or in ../lib/xstack (an
    // installation: scripts/install.sh).
    let dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    [dir.join("libxstack_preload.so"), dir.join("../lib/xstack/libxstack_preload.so")].into_iter().find(|p| p.exists())
}

fn main() {
    let mut args = std::env::args_os().skip(1).peekable();
    let mut env: Vec<(&str, OsString)> = Vec::new();
    while let Some(a) = args.peek().and_then(|a| a.to_str()).map(str::to_owned) {
        let mut value = |name: &'static str| {
            args.next();
            let v = args.next().unwrap_or_else(|| usage());
            env.push((name, v));
        };
        match a.as_str() {
            "--instance" => value("XSTACK_INSTANCE"),
            "--spin" => value("XSTACK_SPIN"),
            "--any" => value("XSTACK_ANY"),
            "--quiet" => {
                args.next();
                env.push(("XSTACK_QUIET", "1".into()));
            }
            "--help" | "-h" => usage(),
            "--" => {
                args.next();
                break;
            }
            _ => break,
        }
    }
    let Some(cmd) = args.next() else { usage() };
    let Some(lib) = library() else {
        eprintln!(
            "xstack-run: libxstack_preload.so not found beside {:?}; set XSTACK_PRELOAD",
            std::env::current_exe().ok()
        );
        std::process::exit(127);
    };
    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut v = lib.into_os_string();
            v.push(" ");
            v.push(old);
            v
        }
        _ => lib.into_os_string(),
    };
    let mut c = std::process::Command::new(&cmd);
    c.args(args).env("LD_PRELOAD", preload);
    for (k, v) in env {
        c.env(k, v);
    }
    let e = c.exec();
    eprintln!("xstack-run: {}: {e}", cmd.to_string_lossy());
    std::process::exit(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
}
