//! Memory per connection (`xstack_bench::memory`, what `xstack-bench
//! memory` reports), bounded by issue 15's aims: an idle established
//! connection at most 2 KiB of the worker's memory (the 128 KiB receive
//! and 16 KiB send buffers were reserved at open before the buffer pool:
//! 149,090 bytes), a TIME_WAIT connection at most 256 bytes (a compact
//! record; the whole connection before: 1,750 bytes). Printed with
//! `--nocapture`.

use xstack_bench::memory::per_connection;

#[test]
fn an_idle_established_connection_takes_at_most_2_kib() {
    for n in [5_000, 20_000] {
        let per = per_connection(n, false).unwrap();
        println!("idle established, {n} connections: {per} bytes each");
        assert!(per <= 2048, "{per} bytes per idle established connection with {n}");
    }
}

#[test]
fn a_time_wait_connection_takes_at_most_256_bytes() {
    for n in [5_000, 20_000] {
        let per = per_connection(n, true).unwrap();
        println!("TIME_WAIT, {n} connections: {per} bytes each");
        assert!(per <= 256, "{per} bytes per TIME_WAIT connection with {n}");
    }
}

/// The cost report runs with one connection and with many open (past one
/// client address's ports), and keeps every connection it opened; the
/// figures themselves are the benchmark's (`xstack-bench memory --costs`),
/// not a test's.
#[test]
fn costs_are_measured_with_one_and_with_many_connections_open() {
    for n in [1, 40_000] {
        let c = xstack_bench::memory::costs(n).unwrap();
        println!("{c:?}");
        assert_eq!(c.connections, n);
        assert!(
            c.exchange_same_ns > 0.0
                && c.exchange_few_ns > 0.0
                && c.exchange_spread_ns > 0.0
                && c.new_connection_ns > 0.0,
            "{c:?}"
        );
    }
}
