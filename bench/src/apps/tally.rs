//! What the responses of a run were: how many were correct, the HTTP
//! status codes seen, and every error by kind with the first example of
//! each. Counting allocates nothing; an example is formatted once, at the
//! first error of its kind.

use serde::{Deserialize, Serialize};

/// The kinds of error a protocol run tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// HTTP: a final status other than 2xx.
    Status,
    /// An error reply of the protocol (redis `-ERR`, memcached `ERROR`,
    /// `CLIENT_ERROR`, `SERVER_ERROR`, a refused store).
    ServerError,
    /// A well-formed response that is not the one expected (size, type).
    WrongValue,
    /// Bytes that are not a response of the protocol.
    Protocol,
    /// The connection was reset.
    Reset,
    /// The server closed the connection with requests unanswered.
    Closed,
    /// No answer within the request timeout.
    Timeout,
    /// The connection could not be established.
    Connect,
    /// Another socket error.
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Status,
        ErrorKind::ServerError,
        ErrorKind::WrongValue,
        ErrorKind::Protocol,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Status => "status",
            ErrorKind::ServerError => "server-error",
            ErrorKind::WrongValue => "wrong-value",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
        }
    }
}

/// Why a complete response is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub kind: ErrorKind,
    pub what: &'static str,
}

/// Status codes are three digits (RFC 9110 section 15).
const CODES: usize = 1000;

/// One thread's counts.
#[derive(Debug, Clone)]
pub struct Tally {
    pub ok: u64,
    /// Requests of the window lost with their connection (a reset, a
    /// timeout, a protocol error end every request in flight on it, and
    /// the error counts once): never answered, so they are counted here
    /// and among the run's incomplete requests.
    pub abandoned: u64,
    codes: Vec<u64>,
    counts: [u64; ErrorKind::ALL.len()],
    firsts: [Option<String>; ErrorKind::ALL.len()],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            ok: 0,
            abandoned: 0,
            codes: vec![0; CODES],
            counts: [0; ErrorKind::ALL.len()],
            firsts: Default::default(),
        }
    }
}

impl Tally {
    /// Counts an HTTP status code (any response, correct or not).
    pub fn status(&mut self, code: u16) {
        if let Some(c) = self.codes.get_mut(usize::from(code)) {
            *c += 1;
        }
    }

    /// Counts an error; `example` is called only for the first of its kind.
    pub fn error(&mut self, kind: ErrorKind, example: impl FnOnce() -> String) {
        let i = kind as usize;
        self.counts[i] += 1;
        if self.firsts[i].is_none() {
            self.firsts[i] = Some(example());
        }
    }

    pub fn errors(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.counts[kind as usize]
    }

    /// The first example of the earliest kind seen, for the summary line.
    pub fn first_error(&self) -> Option<String> {
        ErrorKind::ALL.iter().find_map(|&k| self.firsts[k as usize].as_ref().map(|e| format!("{}: {e}", k.name())))
    }

    pub fn merge(&mut self, o: &Tally) {
        self.ok += o.ok;
        self.abandoned += o.abandoned;
        for (a, b) in self.codes.iter_mut().zip(&o.codes) {
            *a += b;
        }
        for i in 0..self.counts.len() {
            self.counts[i] += o.counts[i];
            if self.firsts[i].is_none() {
                self.firsts[i].clone_from(&o.firsts[i]);
            }
        }
    }

    /// The report's form.
    pub fn report(&self, protocol: &str) -> AppReport {
        AppReport {
            protocol: protocol.to_string(),
            ok: self.ok,
            abandoned: self.abandoned,
            statuses: self
                .codes
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(code, &count)| StatusCount { code: code as u16, count })
                .collect(),
            errors: ErrorKind::ALL
                .iter()
                .filter(|&&k| self.counts[k as usize] > 0)
                .map(|&k| ErrorCount {
                    kind: k,
                    count: self.counts[k as usize],
                    first: self.firsts[k as usize].clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCount {
    pub code: u16,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub kind: ErrorKind,
    pub count: u64,
    /// The first error of this kind: what was wrong and the response's
    /// first bytes.
    pub first: String,
}

/// The per-protocol part of a run's result. Status codes and errors cover
/// the whole run (warm-up included: a wrong server is wrong from the first
/// response); `ok` and `abandoned` only the measurement window, as the
/// operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    pub protocol: String,
    pub ok: u64,
    /// Requests lost with their failed connection (see [`Tally::abandoned`]).
    #[serde(default)]
    pub abandoned: u64,
    /// HTTP: responses by status code.
    pub statuses: Vec<StatusCount>,
    pub errors: Vec<ErrorCount>,
}

impl AppReport {
    /// Human-readable lines: the counts, then each error kind with its
    /// first example.
    pub fn lines(&self) -> Vec<String> {
        let mut head = format!("{}: {} responses ok in the window", self.protocol, self.ok);
        if !self.statuses.is_empty() {
            let mut classes = [0u64; 10];
            for s in &self.statuses {
                classes[usize::from(s.code / 100).min(9)] += s.count;
            }
            let cls: Vec<String> =
                classes.iter().enumerate().filter(|(_, &n)| n > 0).map(|(c, n)| format!("{c}xx {n}")).collect();
            let codes: Vec<String> = self.statuses.iter().map(|s| format!("{} {}", s.code, s.count)).collect();
            head.push_str(&format!("; whole run: status classes {}; codes {}", cls.join(", "), codes.join(", ")));
        }
        let total: u64 = self.errors.iter().map(|e| e.count).sum();
        head.push_str(&format!("; {total} errors in the whole run"));
        if self.abandoned > 0 {
            head.push_str(&format!(
                ", {} requests of the window lost with their connections (counted as incomplete)",
                self.abandoned
            ));
        }
        let mut out = vec![head];
        for e in &self.errors {
            out.push(format!("  {} errors: {} (first: {})", e.kind.name(), e.count, e.first));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_and_keep_the_first_example() {
        let mut a = Tally { ok: 3, ..Tally::default() };
        a.status(200);
        a.status(200);
        a.status(404);
        a.status(1234); // not a status code: ignored
        a.error(ErrorKind::Status, || "404".into());
        let mut b = Tally { ok: 2, ..Tally::default() };
        b.status(503);
        b.error(ErrorKind::Status, || "503".into());
        b.error(ErrorKind::Protocol, || "garbage".into());
        b.error(ErrorKind::Protocol, || unreachable!("only the first example is made"));
        b.abandoned = 7;
        a.merge(&b);
        assert_eq!(a.ok, 5);
        assert_eq!(a.abandoned, 7);
        assert_eq!(a.errors(), 4);
        assert_eq!(a.count(ErrorKind::Protocol), 2);
        assert_eq!(a.first_error().as_deref(), Some("status: 404"));
        let r = a.report("http");
        assert_eq!(
            r.statuses,
            vec![
                StatusCount { code: 200, count: 2 },
                StatusCount { code: 404, count: 1 },
                StatusCount { code: 503, count: 1 }
            ]
        );
        assert_eq!(r.errors[0], ErrorCount { kind: ErrorKind::Status, count: 2, first: "404".into() });
        assert_eq!(r.errors[1], ErrorCount { kind: ErrorKind::Protocol, count: 2, first: "garbage".into() });
        let l = r.lines();
        assert_eq!(
            l[0],
            "http: 5 responses ok in the window; whole run: status classes 2xx 2, 4xx 1, 5xx 1; \
             codes 200 2, 404 1, 503 1; 4 errors in the whole run, 7 requests of the window lost with their \
             connections (counted as incomplete)"
        );
        assert_eq!(l[2], "  protocol errors: 2 (first: garbage)");
        let back: AppReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
