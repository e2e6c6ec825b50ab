//! The established data path allocates nothing: an in-order segment in,
//! its data read, its ACK out (with and without timestamps); and on the
//! sending side, a write, its data segment out, the peer's ACK in; and
//! request/response, each request acknowledging a response. (This
//! binary counts allocations with a global allocator of its own.)

#[path = "../benches/support/mod.rs"]
mod support;

/// Steps 1000 times (the queues and the timer wheel's slab warm up), then
/// counts the allocations of 10 000 more steps.
fn allocations_after_warm_up(mut step: impl FnMut()) -> allocation_counter::AllocationInfo {
    for _ in 0..1000 {
        step();
    }
    allocation_counter::measure(|| {
        for _ in 0..10_000 {
            step();
        }
    })
}

#[test]
fn established_data_path_does_not_allocate() {
    let mut d = support::DataPath::new();
    let info = allocations_after_warm_up(|| d.step());
    assert_eq!(info.count_total, 0, "allocations on the data path: {info:?}");
    assert_eq!(d.acks, 1000 / 2 + 10_000 / 2, "one ACK per two segments");
}

#[test]
fn established_data_path_with_timestamps_does_not_allocate() {
    let mut d = support::DataPath::with_timestamps();
    let info = allocations_after_warm_up(|| d.step());
    assert_eq!(info.count_total, 0, "allocations on the data path: {info:?}");
    assert_eq!(d.acks, 1000 / 2 + 10_000 / 2, "one ACK per two segments");
}

#[test]
fn send_path_does_not_allocate() {
    let mut s = support::SendPath::new();
    let info = allocations_after_warm_up(|| s.step());
    assert_eq!(info.count_total, 0, "allocations on the send path: {info:?}");
    assert_eq!(s.segments, 1000 + 10_000, "one data segment per write");
}

#[test]
fn request_response_path_does_not_allocate() {
    let mut r = support::RrPath::new();
    let info = allocations_after_warm_up(|| r.step());
    assert_eq!(info.count_total, 0, "allocations on the request/response path: {info:?}");
    assert_eq!(r.segments, 1000 + 10_000, "one response per request, carrying its ACK");
    assert!(r.st.stats().header_predicted >= 11_000, "requests take the fast path: {:?}", r.st.stats());
}

#[test]
fn handshakes_free_everything() {
    let mut p = support::Pair::new();
    for _ in 0..10 {
        let (c, s) = p.handshake();
        p.teardown(c, s);
    }
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            let (c, s) = p.handshake();
            p.teardown(c, s);
        }
    });
    assert_eq!(info.count_current, 0, "memory kept after handshakes: {info:?}");
    assert_eq!(p.client.resources().connections + p.server.resources().connections, 0);
}
