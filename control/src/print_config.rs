//! `xstackd --print-config`: the effective configuration (file, command
//! line and defaults merged) as a configuration file the daemon accepts
//! back unchanged, with every TCP knob by the name `xstackctl config`
//! shows.

use crate::config::Config;
use std::fmt::Write as _;
use xstack_bpf::ModeRequest;
use xstack_dataplane::apps::server::Service;
use xstack_dataplane::worker::PollMode;

fn s(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}

/// A knob's text as a TOML value: a number when it is one, else a string.
fn value(v: &str) -> String {
    match v.parse::<i64>() {
        Ok(n) => n.to_string(),
        Err(_) => s(v),
    }
}

fn list<T: ToString>(v: &[T]) -> String {
    format!("[{}]", v.iter().map(T::to_string).collect::<Vec<_>>().join(", "))
}

impl Config {
    pub fn to_toml(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# xstackd --print-config: the effective configuration");
        let _ = writeln!(o, "interface = {}", s(&self.interface));
        let addrs: Vec<String> = self.addresses.iter().map(|a| s(&format!("{}/{}", a.addr, a.prefix_len))).collect();
        let _ = writeln!(o, "addresses = [{}]", addrs.join(", "));
        if let Some(g) = self.gateway {
            let _ = writeln!(o, "gateway = {}", s(&g.to_string()));
        }
        if let Some(m) = self.mac {
            let _ = writeln!(o, "mac = {}", s(&m.to_string()));
        }
        if !self.queues_default {
            let _ = writeln!(o, "queues = {}", self.queues);
        }
        let _ = writeln!(o, "cores = {}", list(&self.cores));
        let mode = match self.xdp_mode {
            ModeRequest::Auto => "auto",
            ModeRequest::Native => "native",
            ModeRequest::Generic => "generic",
        };
        let _ = writeln!(o, "xdp_mode = {}", s(mode));
        let _ = writeln!(o, "replace = {}", self.replace);
        let _ = writeln!(o, "zero_copy = {}", self.zero_copy);
        let poll = match self.poll {
            PollMode::Busy => "busy",
            PollMode::Adaptive { .. } => "adaptive",
            PollMode::Yield => "yield",
        };
        let _ = writeln!(o, "poll = {}", s(poll));
        let _ = writeln!(o, "tcp_ports = {}", list(&self.tcp_ports));
        let _ = writeln!(o, "udp_ports = {}", list(&self.udp_ports));
        let _ = writeln!(o, "bpffs = {}", s(&self.bpffs.display().to_string()));
        let _ = writeln!(o, "instance = {}", s(&self.instance));
        if let Some(p) = &self.control_socket {
            let _ = writeln!(o, "control_socket = {}", s(&p.display().to_string()));
        }
        if let Some(g) = self.control_group {
            let _ = writeln!(o, "control_group = {}", s(&g.to_string()));
        }
        if let Some(m) = self.metrics {
            let _ = writeln!(o, "metrics = {}", s(&m.to_string()));
        }
        let t = &self.http_timeouts;
        let _ = writeln!(
            o,
            "http_timeouts = {}",
            s(&format!("{}:{}:{}:{}", t.header.as_secs(), t.idle.as_secs(), t.progress.as_secs(), t.linger.as_secs()))
        );
        if let Some((ip, port)) = self.connect {
            // Client mode is the command line's alone.
            let _ = writeln!(o, "# client mode: --connect {ip}:{port} (command line only)");
        }
        let _ = writeln!(o, "\n[umem]");
        let _ = writeln!(o, "frame_count = {}", self.frame_count);
        let _ = writeln!(o, "frame_size = {}", self.frame_size);
        let _ = writeln!(o, "ring_size = {}", self.ring_size);
        let _ = writeln!(o, "\n[arp]");
        let _ = writeln!(o, "timeout_secs = {:?}", self.arp.timeout.as_secs_f64());
        let _ = writeln!(o, "retries = {}", self.arp.retries);
        let _ = writeln!(o, "retry_interval_ms = {}", self.arp.retry_interval.as_millis());
        let _ = writeln!(o, "max_entries = {}", self.arp.max_entries);
        if !self.static_neighbours.is_empty() {
            let _ = writeln!(o, "\n[static_neighbours]");
            for (ip, mac) in &self.static_neighbours {
                let _ = writeln!(o, "{} = {}", s(&ip.to_string()), s(&mac.to_string()));
            }
        }
        let _ = writeln!(o, "\n[tcp]");
        for k in crate::knobs::KNOBS {
            let _ = writeln!(o, "{} = {}", k.name, value(&k.value(&self.tcp)));
        }
        for sv in &self.services {
            let _ = writeln!(o, "\n[[service]]");
            let _ = writeln!(o, "kind = {}", s(sv.service.name()));
            let _ = writeln!(o, "port = {}", sv.port);
            let _ = writeln!(o, "backlog = {}", sv.backlog);
            match sv.service {
                Service::Source { bytes } => {
                    let _ = writeln!(o, "bytes = {bytes}");
                }
                Service::Http { body } => {
                    let _ = writeln!(o, "body = {body}");
                }
                _ => {}
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Cli, Config, FileConfig};
    use clap::Parser;

    fn load(args: &[&str], file: &str) -> Config {
        let mut v = vec!["xstackd"];
        v.extend_from_slice(args);
        let f: FileConfig = toml::from_str(file).unwrap_or_else(|e| panic!("{e}\n{file}"));
        Config::merge(&Cli::parse_from(v), f).unwrap_or_else(|e| panic!("{e:#}\n{file}"))
    }

    #[test]
    fn the_printed_configuration_is_accepted_back_unchanged() {
        let first = load(
            &["-i", "eth1", "-a", "198.18.0.3/24", "--http", "80:1024", "--echo", "7", "--queues", "2"],
            r#"
            gateway = "198.18.0.1"
            poll = "yield"
            tcp_ports = [80, 7]
            [tcp]
            syn_retries = 3
            rto_min_ms = 50
            congestion_control = "reno"
            timestamps = false
            [static_neighbours]
            "198.18.0.9" = "02:00:00:00:00:09"
            "#,
        );
        let printed = first.to_toml();
        let again = load(&[], &printed);
        assert_eq!(again.to_toml(), printed, "printed:\n{printed}");
        assert!(printed.contains("syn_retries = 3") && printed.contains("rto_min_ms = 50"), "{printed}");
        assert!(printed.contains("congestion_control = \"reno\""), "{printed}");
        assert_eq!(again.tcp.syn_retries, 3);
        assert!(!again.tcp.timestamps);
        assert_eq!(again.services.len(), 2);
        assert_eq!(again.queues, 2);
    }

    #[test]
    fn every_knob_config_lists_is_accepted_in_the_file() {
        let base = load(&["-i", "eth1", "-a", "198.18.0.3/24"], "");
        for k in crate::knobs::KNOBS {
            let v = super::value(&k.value(&base.tcp));
            let file = format!("[tcp]\n{} = {v}\n", k.name);
            let c = load(&["-i", "eth1", "-a", "198.18.0.3/24"], &file);
            assert_eq!(k.value(&c.tcp), k.value(&base.tcp), "{}", k.name);
        }
        let f: Result<FileConfig, _> = toml::from_str("[tcp]\nno_such_knob = 1\n");
        let err = Config::merge(&Cli::parse_from(["xstackd", "-i", "eth1", "-a", "198.18.0.3/24"]), f.unwrap());
        assert!(format!("{:#}", err.unwrap_err()).contains("unknown key tcp.no_such_knob"));
    }
}
