//! The raw client against a real PD and mock stores (see `mock/`): cross-region operations and
//! the recovery from each kind of routing failure.

mod mock;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use client::{Config, Error, RawClient};
use mock::{
    within, MockCluster, APPLIED_THEN_SLOW, APPLIED_THEN_TIMED_OUT, ENTRY_LIMIT, FORBIDDEN,
    SLOW_ANSWER,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys_of(pairs: &[(Bytes, Bytes)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// Keys `a00`..`z09`: ten per letter, spread over the three regions.
fn sample_pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
    ('a'..='z')
        .flat_map(|c| (0..10).map(move |i| (format!("{c}{i:02}"), format!("v-{c}{i}"))))
        .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
        .collect()
}

fn model() -> BTreeMap<Bytes, Bytes> {
    sample_pairs()
        .into_iter()
        .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_key_operations() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(mock::test_config());
    within("single-key operations", async {
        for key in ["a", "k", "x"] {
            assert_eq!(client.get(key).await.unwrap(), None);
            client.put(key, format!("v-{key}")).await.unwrap();
            assert_eq!(client.get(key).await.unwrap(), Some(b(&format!("v-{key}"))));
        }
        client.delete("k").await.unwrap();
        assert_eq!(client.get("k").await.unwrap(), None);

        let (prev, swapped) = client
            .compare_and_swap(b"c".to_vec(), None, b"1".to_vec())
            .await
            .unwrap();
        assert_eq!((prev, swapped), (None, true));
        let (prev, swapped) = client.compare_and_swap("c", Some("0"), "2").await.unwrap();
        assert_eq!((prev, swapped), (Some(b("1")), false));
        let (prev, swapped) = client.compare_and_swap("c", Some("1"), "2").await.unwrap();
        assert_eq!((prev, swapped), (Some(b("1")), true));
        assert_eq!(client.get("c").await.unwrap(), Some(b("2")));
        assert!(matches!(
            client.get("").await,
            Err(Error::InvalidArgument(_))
        ));
    })
    .await;
    // Region 3's first peer is on a store nobody listens on (and PD knows no leader): the
    // client moved on to the other peers, and store 3 served "x".
    assert!(cluster.requests(3) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_span_regions() {
    let cluster = MockCluster::start().await;
    // Small requests, so that one region's group takes several.
    let client = cluster.client(Config {
        max_batch_keys: 7,
        ..mock::test_config()
    });
    within("batches", async {
        client.batch_put(sample_pairs()).await.unwrap();
        assert_eq!(cluster.world.lock().data, model());

        let mut wanted: Vec<String> = vec!["z09".into(), "a00".into(), "nope".into(), "m05".into()];
        wanted.push("a00".into());
        let got = client.batch_get(wanted).await.unwrap();
        assert_eq!(keys_of(&got), ["a00", "m05", "z09"]);
        assert_eq!(got[1].1, b("v-m5"));

        let doomed: Vec<String> = ["b01", "h02", "q03", "q04"].map(String::from).to_vec();
        client.batch_delete(doomed).await.unwrap();
        let got = client
            .batch_get(["b01", "h02", "q03", "q05"])
            .await
            .unwrap();
        assert_eq!(keys_of(&got), ["q05"]);

        // A key given twice gets its last value.
        client
            .batch_put([("dup", "first"), ("dup", "second")])
            .await
            .unwrap();
        assert_eq!(client.get("dup").await.unwrap(), Some(b("second")));
        client
            .batch_put(Vec::<(Bytes, Bytes)>::new())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_cross_regions() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(Config {
        scan_batch_size: 4,
        ..mock::test_config()
    });
    within("scans", async {
        client.batch_put(sample_pairs()).await.unwrap();
        let all: Vec<Bytes> = model().into_keys().collect();

        let got = client.scan("", "", 1000).await.unwrap();
        assert_eq!(got.len(), all.len());
        assert_eq!(got, model().into_iter().collect::<Vec<_>>());

        // Across the boundaries at "g" and "p", with a limit ending inside region 3.
        let got = client.scan("f05", "", 30).await.unwrap();
        assert_eq!(got.first().map(|p| p.0.clone()), Some(b("f05")));
        assert_eq!(got.last().map(|p| p.0.clone()), Some(b("i04")));
        let keys = client.scan_keys("e", "q", 1000).await.unwrap();
        assert_eq!(keys.len(), 120);
        assert!(keys.iter().all(|k| k[..] >= b"e"[..] && k[..] < b"q"[..]));
        assert!(client.scan("g", "g", 10).await.unwrap().is_empty());
        assert!(matches!(
            client.scan("q", "g", 10).await,
            Err(Error::InvalidArgument(_))
        ));

        let got = client.scan_reverse("", "", 1000).await.unwrap();
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(got.into_iter().map(|p| p.0).collect::<Vec<_>>(), reversed);
        // An upper bound on a region boundary, the walk crossing two more regions.
        let got = client.scan_reverse("f", "p", 1000).await.unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got.first().map(|p| p.0.clone()), Some(b("o09")));
        assert_eq!(got.last().map(|p| p.0.clone()), Some(b("f00")));
        let got = client.scan_reverse("", "q", 3).await.unwrap();
        assert_eq!(keys_of(&got), ["p09", "p08", "p07"]);

        client.delete_range("c05", "r").await.unwrap();
        let left = client.scan_keys("", "", 1000).await.unwrap();
        assert_eq!(left.len(), all.len() - 145);
        assert_eq!(
            client.scan_keys("c", "s", 1000).await.unwrap().len(),
            5 + 10
        );
        client.delete_range("", "").await.unwrap();
        assert!(cluster.world.lock().data.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_new_leader_without_asking_pd() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(mock::test_config());
    within("leader change", async {
        client.put("k", "1").await.unwrap();
        let before = (cluster.requests(2), cluster.requests(3));
        cluster.set_leader(2, Some(3));
        client.put("k", "2").await.unwrap();
        // Store 2 answered NotLeader(3) once; store 3 took the write.
        assert_eq!(cluster.requests(2), before.0 + 1);
        assert_eq!(cluster.requests(3), before.1 + 1);
        client.put("k", "3").await.unwrap();
        assert_eq!(cluster.requests(2), before.0 + 1);
        assert_eq!(client.get("k").await.unwrap(), Some(b("3")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_scans_survive_a_split() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(mock::test_config());
    within("split", async {
        client.batch_put(sample_pairs()).await.unwrap();
        // Region 2 ["g", "p") becomes ["g", "k") and ["k", "p") = 4, with a new leader.
        cluster.split(2, "k", 4).await;
        cluster.set_leader(4, Some(1));
        let pairs: Vec<(String, String)> = (0..10)
            .flat_map(|i| ["h", "l", "o"].map(|c| (format!("{c}{i:02}"), format!("new-{c}{i}"))))
            .collect();
        client.batch_put(pairs).await.unwrap();
        let got = client.batch_get(["h03", "l03", "o03"]).await.unwrap();
        assert_eq!(
            got.into_iter().map(|p| p.1).collect::<Vec<_>>(),
            [b("new-h3"), b("new-l3"), b("new-o3")]
        );
        cluster.split(1, "c", 5).await;
        let got = client.scan("", "", 1000).await.unwrap();
        assert_eq!(got.len(), 260);
        let got = client.scan_reverse("", "", 1000).await.unwrap();
        assert_eq!(got.len(), 260);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_a_store_is_down() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(mock::test_config());
    within("store down", async {
        client.batch_put(sample_pairs()).await.unwrap();
        // Store 1 dies (its port refuses connections); region 1 elects store 2.
        cluster.stop_store(1).await;
        cluster.set_leader(1, Some(2));
        // A client that never reached store 1 finds its connection refused: the write certainly
        // was not delivered, so it fails over and is sent to store 2.
        let fresh = cluster.client(mock::test_config());
        let before = cluster.requests(2);
        fresh.put("b", "after").await.unwrap();
        assert!(cluster.requests(2) > before, "store 2 took the write");
        fresh.batch_put([("c", "1"), ("d", "1")]).await.unwrap();
        fresh.delete("c").await.unwrap();
        assert_eq!(fresh.get("b").await.unwrap(), Some(b("after")));
        // The first client had a connection to store 1: its reads fail over as well.
        assert_eq!(client.get("a01").await.unwrap(), Some(b("v-a1")));
        assert_eq!(client.scan("", "", 1000).await.unwrap().len(), 262);
        client.put("b", "again").await.unwrap();
        assert_eq!(client.get("b").await.unwrap(), Some(b("again")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_answer_is_lost_are_not_sent_again() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(Config {
        request_timeout: SLOW_ANSWER / 4,
        ..mock::test_config()
    });
    let key = || Bytes::from_static(APPLIED_THEN_SLOW);
    within("lost answers", async {
        client.get("a").await.unwrap(); // Region 1 is cached and its leader found.
        let attempts: [(&str, futures_like::Op<'_>); 3] = [
            ("put", Box::pin(client.put(key(), "1"))),
            ("batch_put", Box::pin(client.batch_put([(key(), "2")]))),
            ("delete", Box::pin(client.delete(key()))),
        ];
        for (name, op) in attempts {
            let before = cluster.requests(1);
            match op.await {
                Err(Error::Undetermined(why)) => assert!(why.contains("no answer"), "{why}"),
                other => panic!("{name}: expected an undetermined outcome, got {other:?}"),
            }
            assert_eq!(cluster.requests(1), before + 1, "{name} was sent again");
        }
        // The writes did take effect: the last one deleted the key.
        assert_eq!(client.get(key()).await.unwrap(), None);
        // The store whose answers were lost is avoided next time, then found again.
        client.put("b", "1").await.unwrap();
        assert_eq!(client.get("b").await.unwrap(), Some(b("1")));
    })
    .await;
}

/// The boxed future of one write, so that different writes fit in one array.
mod futures_like {
    pub type Op<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = client::Result<()>> + Send + 'a>>;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_answered_undetermined_by_the_store_is_not_sent_again() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(mock::test_config());
    within("undetermined put", async {
        let before = cluster.requests(1);
        match client.put(APPLIED_THEN_TIMED_OUT, "1").await {
            Err(Error::Undetermined(why)) => assert!(why.contains("no result within"), "{why}"),
            other => panic!("expected an undetermined outcome, got {other:?}"),
        }
        assert_eq!(cluster.requests(1), before + 1, "the put was sent again");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_swap_with_unknown_outcome_is_not_sent_again() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(mock::test_config());
    within("undetermined CAS", async {
        let before = cluster.requests(1);
        match client
            .compare_and_swap(APPLIED_THEN_TIMED_OUT, None, "1")
            .await
        {
            Err(Error::Undetermined(why)) => assert!(why.contains("no result within"), "{why}"),
            other => panic!("expected an undetermined outcome, got {other:?}"),
        }
        assert_eq!(cluster.requests(1), before + 1, "the CAS was sent again");
        // It did take effect: a retry would have reported a failed swap.
        assert_eq!(
            client.get(APPLIED_THEN_TIMED_OUT).await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_errors_are_returned() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(mock::test_config());
    within("final errors", async {
        let big = vec![b'x'; ENTRY_LIMIT + 1];
        match client.put("big", big).await {
            Err(Error::Region(e)) => assert!(e.raft_entry_too_large.is_some()),
            other => panic!("expected RaftEntryTooLarge, got {other:?}"),
        }
        assert!(matches!(
            client.put(FORBIDDEN, "v").await,
            Err(Error::Server(m)) if m == "forbidden key"
        ));
        assert!(matches!(
            client.batch_get([FORBIDDEN]).await,
            Err(Error::Server(m)) if m == "forbidden key"
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_when_no_leader_emerges() {
    let cluster = MockCluster::start().await;
    let client = cluster.client(Config {
        max_retry_time: Duration::from_millis(300),
        ..mock::test_config()
    });
    cluster.set_leader(3, None);
    let started = std::time::Instant::now();
    match within("no leader", client.get("x")).await {
        Err(Error::Timeout { last_error, .. }) => {
            assert!(last_error.contains("NotLeader"), "{last_error}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Other regions are unaffected.
    client.put("a", "1").await.unwrap();
}

#[test]
fn client_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn check(client: &RawClient) {
        assert_send(&client.get("k"));
        assert_send(&client.batch_get(["k"]));
        assert_send(&client.batch_put([("k", "v")]));
        assert_send(&client.scan("a", "b", 1));
        assert_send(&client.scan_reverse("a", "b", 1));
        assert_send(&client.delete_range("a", "b"));
        assert_send(&client.compare_and_swap("k", None, "v"));
    }
    let _ = check;
}
