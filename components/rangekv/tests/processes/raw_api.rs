//! The raw API served by a three-store cluster.

use crate::support::*;

#[test]
fn three_stores_serve_raw_put_get_scan_delete() {
    let t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..100 {
            c.put(key(i), format!("v{i}").into_bytes()).await.unwrap();
        }
        assert_eq!(
            c.get(key(7)).await.unwrap().map(|v| v.to_vec()),
            Some(b"v7".to_vec())
        );
        assert_eq!(
            c.get(b"missing".to_vec())
                .await
                .unwrap()
                .map(|v| v.to_vec()),
            None
        );
        let all = c.scan(key(0), key(100), 1000).await.unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].0.to_vec(), key(0));
        let some = c.scan(key(10), key(20), 5).await.unwrap();
        assert_eq!(
            some.iter().map(|p| p.0.to_vec()).collect::<Vec<_>>(),
            (10..15).map(key).collect::<Vec<_>>()
        );
        c.delete(key(7)).await.unwrap();
        assert_eq!(c.get(key(7)).await.unwrap().map(|v| v.to_vec()), None);
        c.delete_range(key(50), key(60)).await.unwrap();
        assert_eq!(c.scan(key(0), key(100), 1000).await.unwrap().len(), 89);
        let (prev, swapped) = c
            .compare_and_swap(b"cas".to_vec(), None, b"a".to_vec())
            .await
            .unwrap();
        assert!(swapped && prev.is_none());
        let (prev, swapped) = c
            .compare_and_swap(b"cas".to_vec(), None, b"b".to_vec())
            .await
            .unwrap();
        assert!(!swapped && prev.as_deref() == Some(&b"a"[..]));
    });
}
