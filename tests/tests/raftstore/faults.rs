use std::time::Duration;

use tests::network::{RandomDelay, RandomDrop};
use tests::Cluster;

#[test]
fn writes_survive_dropped_delayed_and_reordered_messages() {
    let cluster = Cluster::new(3, &[b"h", b"p"]);
    for r in 1..=3 {
        cluster.wait_leader(r, Duration::from_secs(10));
    }
    cluster.add_filter(RandomDrop::new(0.1, 7));
    cluster.add_filter(RandomDelay::new(
        Duration::from_millis(0),
        Duration::from_millis(20),
        11,
    ));
    cluster.net.set_reorder(true);
    let keys: Vec<String> = (0..30u32)
        .map(|i| format!("{}{i:02}", (b'a' + (i % 26) as u8) as char))
        .collect();
    for k in &keys {
        cluster.must_put(k.as_bytes(), k.as_bytes());
    }
    for k in &keys {
        assert_eq!(
            cluster.must_get(k.as_bytes()).as_deref(),
            Some(k.as_bytes())
        );
    }
    cluster.clear_filters();
    cluster.net.set_reorder(false);
    for k in &keys {
        cluster.wait_replicated(k.as_bytes(), Some(k.as_bytes()), Duration::from_secs(15));
    }
}
