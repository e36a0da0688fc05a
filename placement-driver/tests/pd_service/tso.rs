//! Timestamps: strictly increasing across streams and batches, and across restarts even when
//! the clock went back.

use std::sync::Arc;

use placement_driver::{start, start_with_clock, ManualClock, PdConfig};
use proto::pdpb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::rpc::*;

/// Opens a Tso stream; returns a function-like pair (sender, response stream).
async fn tso_stream(
    client: &mut Client,
) -> (mpsc::Sender<TsoRequest>, tonic::Streaming<TsoResponse>) {
    let (tx, rx) = mpsc::channel(16);
    let responses = client
        .tso(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, responses)
}

/// Requests `count` timestamps; returns the composed (first, last).
async fn get_ts(
    tx: &mpsc::Sender<TsoRequest>,
    responses: &mut tonic::Streaming<TsoResponse>,
    cluster_id: u64,
    count: u32,
) -> (u64, u64) {
    tx.send(TsoRequest {
        header: header(cluster_id),
        count,
        dc_location: String::new(),
    })
    .await
    .unwrap();
    let resp = responses.message().await.unwrap().unwrap();
    assert_eq!(error_type(&resp.header), None, "{:?}", resp.header);
    assert_eq!(resp.header.unwrap().cluster_id, cluster_id);
    assert_eq!(resp.count, count);
    let ts = resp.timestamp.unwrap();
    assert!(ts.logical < 1 << 18 && ts.logical >= i64::from(count));
    let last = ((ts.physical as u64) << 18) | ts.logical as u64;
    (last - u64::from(count) + 1, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tso_is_strictly_increasing_across_concurrent_streams_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(dir.path()).await;
    let cluster_id = pd.cluster_id();
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let mut client = connect(&pd).await;
        tasks.push(tokio::spawn(async move {
            let (tx, mut responses) = tso_stream(&mut client).await;
            let mut ranges = Vec::new();
            let mut prev = 0;
            for i in 0..200u32 {
                let count = 1 + (i * 7 + task) % 40;
                let (first, last) = get_ts(&tx, &mut responses, cluster_id, count).await;
                assert!(first > prev, "stream {task}: {first} after {prev}");
                prev = last;
                ranges.push((first, last));
            }
            ranges
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    // Ranges handed to different streams never overlap.
    all.sort_unstable();
    for pair in all.windows(2) {
        assert!(pair[0].1 < pair[1].0, "overlapping ranges {pair:?}");
    }
    // A batch larger than what is left of the logical space in this millisecond still works.
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (_, a) = get_ts(&tx, &mut responses, cluster_id, 200_000).await;
    let (b, _) = get_ts(&tx, &mut responses, cluster_id, 200_000).await;
    assert!(b > a);
    // A zero count is rejected in the header, and the stream stays usable.
    tx.send(TsoRequest {
        header: header(cluster_id),
        count: 0,
        dc_location: String::new(),
    })
    .await
    .unwrap();
    let resp = responses.message().await.unwrap().unwrap();
    assert_eq!(error_type(&resp.header), Some(ErrorType::InvalidValue));
    get_ts(&tx, &mut responses, cluster_id, 1).await;
    drop(tx);
    pd.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tso_after_restart_is_above_everything_before_even_if_the_clock_went_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let pd = start_with_clock(PdConfig::for_test(dir.path()), clock.clone())
        .await
        .unwrap();
    let cluster_id = pd.cluster_id();
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let mut before = 0;
    for _ in 0..100 {
        clock.advance(7);
        before = get_ts(&tx, &mut responses, cluster_id, 3).await.1;
    }
    drop(tx);
    pd.shutdown().await.unwrap();

    // The clock jumped back 10 s while PD was down.
    clock.set(1_700_000_000_000 - 10_000);
    let pd = start_with_clock(PdConfig::for_test(dir.path()), clock.clone())
        .await
        .unwrap();
    assert_eq!(pd.cluster_id(), cluster_id, "cluster id is persisted");
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (after, _) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    assert!(after > before, "{after} after restart <= {before} before");
    // A clock jump far past the persisted window: the physical part follows the clock (the
    // window is extended before anything beyond it is handed out).
    clock.advance(60_000);
    let (jumped, _) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    assert_eq!(jumped >> 18, 1_700_000_000_000 + 50_000);
    drop(tx);
    pd.shutdown().await.unwrap();

    // And with the real clock, a restart right away (well within the save window).
    let pd = start_pd(dir.path()).await;
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (_, real_before) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    drop(tx);
    let addr = pd.addr();
    pd.shutdown().await.unwrap();
    let mut config = PdConfig::for_test(dir.path());
    config.listen_addr = addr.to_string();
    let pd = start(config).await.unwrap();
    let mut client = connect(&pd).await;
    let (tx, mut responses) = tso_stream(&mut client).await;
    let (real_after, _) = get_ts(&tx, &mut responses, cluster_id, 1).await;
    assert!(real_after > real_before);
    drop(tx);
    pd.shutdown().await.unwrap();
}
