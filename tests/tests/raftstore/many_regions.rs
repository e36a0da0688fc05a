use std::time::Duration;

use tests::Cluster;

#[test]
fn a_hundred_and_twenty_regions_all_elect_leaders_and_serve() {
    let splits: Vec<Vec<u8>> = (1..120u32)
        .map(|i| format!("key{i:04}").into_bytes())
        .collect();
    let split_refs: Vec<&[u8]> = splits.iter().map(|s| s.as_slice()).collect();
    let cluster = Cluster::new(3, &split_refs);
    assert_eq!(cluster.regions.len(), 120);
    for r in &cluster.regions {
        cluster.wait_leader(r.id, Duration::from_secs(60));
    }
    for i in 0..120u32 {
        let k = format!("key{i:04}-x");
        cluster.must_put(k.as_bytes(), k.as_bytes());
    }
    for i in 0..120u32 {
        let k = format!("key{i:04}-x");
        assert_eq!(
            cluster.must_get(k.as_bytes()).as_deref(),
            Some(k.as_bytes())
        );
    }
}
