//! Regions split by `rangekv ctl` and by size, and PD spreading their leaders over the stores:
//! by count, and for hot regions by the load their leaders report.

use std::time::Duration;

use test_util::{retry, wait_until};

use crate::support::*;

#[test]
fn ctl_splits_a_region_and_clients_follow_the_new_layout() {
    let t = TestCluster::start(3);
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..100 {
            c.put(key(i), format!("v{i}").into_bytes()).await.unwrap();
        }
    });
    let endpoints = t.cluster.pd_endpoints().join(",");
    let split_at = String::from_utf8(key(50)).unwrap();
    let regions = ctl(&endpoints, &["--json", "region", "split", &split_at]).json();
    assert_eq!(regions.as_array().map(|a| a.len()), Some(2), "{regions}");
    // The client that cached the old region learns the new layout from the stores' errors.
    t.rt.block_on(async {
        for i in [0, 49, 50, 99] {
            assert_eq!(
                c.get(key(i)).await.unwrap().map(|v| v.to_vec()),
                Some(format!("v{i}").into_bytes())
            );
        }
        assert_eq!(c.scan(key(0), key(100), 1000).await.unwrap().len(), 100);
        c.put(key(75), b"after-split".to_vec()).await.unwrap();
    });
    // PD knows both regions (of the keys before the API V2 keyspaces, whose boundaries PD
    // splits at on its own).
    let pd = t.pd();
    wait_until("PD to know the split", Duration::from_secs(20), || {
        t.rt.block_on(pd.scan_regions(b"", b"r", 10)).unwrap().len() == 2
    });
    // PD had the regions split at the default keyspace's boundaries: one region holds exactly
    // its raw range, one its transactional range.
    let bounds = server::keyspace::default_keyspace_boundaries();
    wait_until("the keyspace regions", Duration::from_secs(20), || {
        let regions = t.rt.block_on(pd.scan_regions(b"", b"", 100)).unwrap();
        [(0, 1), (2, 3)].iter().all(|&(s, e)| {
            regions
                .iter()
                .any(|r| r.region.start_key == bounds[s] && r.region.end_key == bounds[e])
        })
    });
}

#[test]
fn a_region_under_steady_load_is_split_by_load() {
    let t =
        TestCluster::start_with_config(1, 3, "[split]\nqps_threshold = 40\ndetect_windows = 2\n");
    let c = t.client();
    t.rt.block_on(async {
        c.batch_put((0..200u32).map(|i| (key(i), b"v".to_vec())))
            .await
            .unwrap();
    });
    let pd = t.pd();
    let regions = || t.rt.block_on(pd.scan_regions(b"", b"r", 10)).unwrap();
    assert_eq!(regions().len(), 1, "small data: one region");
    // Reads spread over the 200 keys, well above 40 a second, until the region splits.
    let started = std::time::Instant::now();
    let mut i = 0u32;
    while regions().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no load split after a minute of load"
        );
        t.rt.block_on(async {
            for _ in 0..100 {
                i = (i * 7 + 13) % 200;
                c.get(key(i)).await.unwrap();
            }
        });
    }
    // Split strictly inside the loaded keys, and every key still reads.
    let split = regions()[1].region.start_key.clone();
    assert!(
        split.as_ref() > key(0).as_slice() && split.as_ref() <= key(199).as_slice(),
        "{split:?}"
    );
    t.rt.block_on(async {
        for i in [0, 100, 199] {
            assert_eq!(c.get(key(i)).await.unwrap().as_deref(), Some(&b"v"[..]));
        }
    });
}

#[test]
fn regions_that_outgrow_the_size_limit_split_by_themselves() {
    let t = TestCluster::start_with_config(
        1,
        3,
        "[split]\nregion_max_size = 65536\nregion_split_size = 32768\ncheck_secs = 1\n",
    );
    let c = t.client();
    let value = vec![b'x'; 1000];
    t.rt.block_on(async {
        for chunk in (0..300u32).collect::<Vec<_>>().chunks(50) {
            c.batch_put(chunk.iter().map(|i| (key(*i), value.clone())))
                .await
                .unwrap();
        }
    });
    let pd = t.pd();
    retry(Duration::from_secs(60), || {
        // Regions of the test's keys (before the API V2 keyspaces, split apart on their own).
        let n =
            t.rt.block_on(pd.scan_regions(b"", b"r", 100))
                .unwrap()
                .len();
        if n >= 4 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .unwrap_or_else(|n| panic!("only {n} regions after a minute\n{}", t.logs()));
    // Nothing was lost or duplicated, and every region still takes writes.
    t.rt.block_on(async {
        let all = c.scan(key(0), key(300), 1000).await.unwrap();
        assert_eq!(all.len(), 300);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        for i in (0..300).step_by(37) {
            c.put(key(i), b"again".to_vec()).await.unwrap();
            assert_eq!(c.get(key(i)).await.unwrap().as_deref(), Some(&b"again"[..]));
        }
    });
}

#[test]
fn pd_spreads_region_leaders_over_the_stores() {
    // Small regions split by themselves; the new regions' leaders start on the store that led
    // the parent, and PD's balance-leader scheduler spreads them out.
    let t = TestCluster::start_with_config(
        1,
        3,
        "[split]\nregion_max_size = 32768\nregion_split_size = 16384\ncheck_secs = 1\n",
    );
    let c = t.client();
    let value = vec![b'x'; 1000];
    t.rt.block_on(async {
        for chunk in (0..200u32).collect::<Vec<_>>().chunks(50) {
            c.batch_put(chunk.iter().map(|i| (key(*i), value.clone())))
                .await
                .unwrap();
        }
    });
    let pd = t.pd();
    retry(Duration::from_secs(90), || {
        let regions = t.rt.block_on(pd.scan_regions(b"", b"", 100)).unwrap();
        // Regions of the test's keys (before the API V2 keyspaces, split apart on their own).
        let data_regions =
            t.rt.block_on(pd.scan_regions(b"", b"r", 100))
                .unwrap()
                .len();
        let mut per_store = std::collections::BTreeMap::new();
        for store in t.rt.block_on(pd.get_all_stores(true)).unwrap() {
            per_store.insert(store.id, 0usize);
        }
        for r in &regions {
            if let Some(l) = &r.leader {
                *per_store.entry(l.store_id).or_default() += 1;
            }
        }
        let led: usize = per_store.values().sum();
        let (min, max) = (
            per_store.values().min().copied().unwrap_or(0),
            per_store.values().max().copied().unwrap_or(0),
        );
        if data_regions >= 6 && led == regions.len() && min >= 1 && max - min <= 2 {
            Ok(())
        } else {
            Err(format!(
                "{} regions, leaders per store {per_store:?}",
                regions.len()
            ))
        }
    })
    .unwrap_or_else(|e| panic!("leaders not balanced: {e}\n{}", t.logs()));
    // And the data is all still there.
    assert_eq!(
        t.rt.block_on(c.scan(key(0), key(200), 1000)).unwrap().len(),
        200
    );
}

#[test]
fn pd_moves_a_hot_region_s_leader_off_the_store_leading_all_the_load() {
    // Leader counts never move anything here (a threshold far above any gap): only the flows
    // the stores report can.
    let t = TestCluster::start_customized(1, 3, "[split]\nqps_threshold = 0\n", |cfg| {
        let pd_toml = cfg.data_dir.join("pd.toml");
        std::fs::write(
            &pd_toml,
            "leader_balance_threshold = 1000\nhot_region_min_flow = 20\n",
        )
        .expect("write PD config");
        cfg.pd_args
            .extend(["--config".into(), pd_toml.display().to_string()]);
    });
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..100 {
            c.put(key(i), b"v".to_vec()).await.unwrap();
        }
    });
    let endpoints = t.cluster.pd_endpoints().join(",");
    let split_at = String::from_utf8(key(50)).unwrap();
    let out = ctl(&endpoints, &["region", "split", &split_at]);
    assert!(out.ok, "{}", out.stderr);
    let pd = t.pd();
    // The two regions of the test's keys (those before the API V2 keyspaces), each with a
    // leader PD knows.
    let data_regions = || {
        let regions = t.rt.block_on(pd.scan_regions(b"", b"r", 10)).unwrap();
        (regions.len() == 2 && regions.iter().all(|r| r.leader.is_some())).then_some(regions)
    };
    let mut regions = None;
    wait_until(
        "PD to know both regions and their leaders",
        Duration::from_secs(30),
        || {
            regions = data_regions();
            regions.is_some()
        },
    );
    let regions = regions.unwrap();
    // Both led by one store.
    let store = regions[0].leader.unwrap().store_id;
    let moved = &regions[1];
    if moved.leader.unwrap().store_id != store {
        let from =
            t.rt.block_on(pd.get_store(moved.leader.unwrap().store_id))
                .unwrap();
        let url = format!(
            "http://{}/regions/{}/transfer-leader/{store}",
            from.status_address, moved.region.id
        );
        let resp =
            t.rt.block_on(reqwest::Client::new().post(&url).send())
                .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "transfer refused");
        wait_until("both leaders on one store", Duration::from_secs(30), || {
            data_regions().is_some_and(|r| r.iter().all(|r| r.leader.unwrap().store_id == store))
        });
    }
    // Reads on both regions: the store leads all of the load, so PD moves one hot leader.
    let mut i = 0u32;
    wait_until(
        "a hot region's leader moved",
        Duration::from_secs(60),
        || {
            t.rt.block_on(async {
                for _ in 0..200 {
                    i = (i + 37) % 100;
                    let _ = c.get(key(i)).await;
                }
            });
            data_regions().is_some_and(|r| r.iter().any(|r| r.leader.unwrap().store_id != store))
        },
    );
}

/// Small regions merge back on their own: PD's merge checker finds adjacent small regions on
/// the same stores once `split_merge_interval` has passed since their split, and the stores
/// merge them; clients follow the new layout and every key is still there.
#[test]
fn small_regions_merge_back_on_their_own() {
    let t = TestCluster::start_with_pd_config(3, "split_merge_interval = \"1s\"\n");
    let c = t.client();
    t.rt.block_on(async {
        for i in 0..100 {
            c.put(key(i), format!("v{i}").into_bytes()).await.unwrap();
        }
    });
    let endpoints = t.cluster.pd_endpoints().join(",");
    for i in [25, 50, 75] {
        let at = String::from_utf8(key(i)).unwrap();
        let out = ctl(&endpoints, &["region", "split", &at]);
        assert!(out.ok, "{}", out.stderr);
    }
    // Below the default keyspace's boundaries (PD keeps those apart).
    let pd = t.pd();
    let below_keyspaces = || {
        t.rt.block_on(pd.scan_regions(b"", b"r", 100))
            .unwrap()
            .len()
    };
    wait_until("PD to know the splits", Duration::from_secs(20), || {
        below_keyspaces() >= 4
    });
    wait_until("the regions merged back", Duration::from_secs(90), || {
        below_keyspaces() == 1
    });
    t.rt.block_on(async {
        for i in 0..100 {
            assert_eq!(
                c.get(key(i)).await.unwrap().map(|v| v.to_vec()),
                Some(format!("v{i}").into_bytes()),
                "key {i}"
            );
        }
        c.put(key(10), b"after the merges".to_vec()).await.unwrap();
    });
    check_replicas_agree(&t);
}
