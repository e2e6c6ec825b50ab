//! Micro-benchmarks of the HTTP service's request-head parsing (criterion):
//! - one complete head as curl sends it (request line and 3 fields) and
//!   as a browser-like client sends it (7 fields), through `parse_head`
//!   (the part that validates and reads the fields) and through `parse`
//!   (which also finds the head's end);
//! - a batch of 16 pipelined wrk-style GETs in one buffer, parsed one
//!   after the other as the server does with a full receive buffer.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use xstack_dataplane::apps::http::{self, Parsed};

/// What `curl http://198.18.0.3/` sends.
const CURL: &[u8] = b"GET / HTTP/1.1\r\nHost: 198.18.0.3\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

/// A head with the fields a browser or a load generator with custom
/// headers sends: 7 fields, 374 bytes.
const BROWSER: &[u8] = b"GET /index.html?lang=en HTTP/1.1\r\n\
Host: 198.18.0.3:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\n\
Cache-Control: max-age=0\r\n\r\n";

/// What wrk sends for `wrk http://198.18.0.3:80/`.
const WRK: &[u8] = b"GET / HTTP/1.1\r\nHost: 198.18.0.3:80\r\n\r\n";

fn parse_all(buf: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < buf.len() {
        match http::parse(&buf[at..]) {
            Parsed::Complete { len, request } => {
                black_box(request);
                at += len;
                n += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    n
}

fn heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Elements(1));
    for (name, head) in [("curl", CURL), ("browser", BROWSER)] {
        assert!(http::parse_head(head).is_ok());
        g.bench_function(format!("parse_head/{name}"), |b| b.iter(|| http::parse_head(black_box(head))));
        g.bench_function(format!("parse/{name}"), |b| b.iter(|| http::parse(black_box(head))));
    }
    let batch: Vec<u8> = WRK.repeat(16);
    assert_eq!(parse_all(&batch), 16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("parse/pipelined_16_wrk", |b| b.iter(|| parse_all(black_box(&batch))));
    g.finish();
}

criterion_group!(benches, heads);
criterion_main!(benches);
