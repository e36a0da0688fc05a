//! Id allocation: ids never repeat, across concurrent clients and restarts.

use std::collections::HashSet;

use placement_driver::{start, PdConfig};

use crate::rpc::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alloc_id_never_repeats_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = HashSet::new();
    let mut addr = None;
    for round in 0..3 {
        let mut config = PdConfig::for_test(dir.path());
        config.id_alloc_step = 50;
        if let Some(addr) = addr {
            config.listen_addr = format!("{addr}");
        }
        let pd = start(config).await.unwrap();
        addr = Some(pd.addr());
        let mut tasks = Vec::new();
        for task in 0..4u32 {
            let mut client = connect(&pd).await;
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..40u32 {
                    ids.extend(alloc_ids(&mut client, (i + task) % 5).await);
                }
                ids
            }));
        }
        for task in tasks {
            for id in task.await.unwrap() {
                assert!(seen.insert(id), "id {id} repeated in round {round}");
            }
        }
        pd.shutdown().await.unwrap();
    }
    assert!(seen.len() > 3 * 4 * 40);
}
