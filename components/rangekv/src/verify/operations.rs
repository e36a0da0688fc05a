//! The nemesis' faults that are operations asked of PD or of the stores over their HTTP APIs
//! (replica moves, merges, leader shuffles), rather than signals to processes: each is asked
//! once and carried out by the cluster over the next seconds.

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

/// Asks PD to move one replica of a region drawn from `pick` to a store without one; returns
/// what it asked for.
pub(super) async fn move_replica(endpoints: Vec<String>, pick: usize) -> Result<String> {
    let pd = pd_client::PdClient::connect(endpoints.clone()).await?;
    let regions = pd.scan_regions(b"", b"", 10_000).await?;
    let stores: Vec<u64> = pd
        .get_all_stores(true)
        .await?
        .iter()
        .map(|s| s.id)
        .collect();
    if regions.is_empty() {
        bail!("no region known");
    }
    let region = &regions[pick % regions.len()].region;
    let holders: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    let free: Vec<u64> = stores
        .iter()
        .copied()
        .filter(|s| !holders.contains(s))
        .collect();
    if free.is_empty() || holders.is_empty() {
        bail!("every store holds region {}", region.id);
    }
    let from = holders[(pick / 7) % holders.len()];
    let to = free[(pick / 11) % free.len()];
    let body = json!({
        "name": "transfer-peer",
        "region_id": region.id,
        "from_store_id": from,
        "to_store_id": to,
    });
    let plaintext = security::SecurityManager::plaintext();
    crate::ctl::pd_http(
        &endpoints,
        &plaintext,
        reqwest::Method::POST,
        "operators",
        Some(body),
    )
    .await?;
    Ok(format!("region {}: store {from} -> store {to}", region.id))
}

/// Asks each region's leader to hand its leadership to another replica, drawn from `pick`;
/// returns how many transfers were accepted.
pub(super) async fn shuffle_leaders(endpoints: Vec<String>, pick: usize) -> Result<usize> {
    let pd = pd_client::PdClient::connect(endpoints).await?;
    let regions = pd.scan_regions(b"", b"", 10_000).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    let mut accepted = 0;
    for (i, info) in regions.iter().enumerate() {
        let Some(leader) = info.leader else { continue };
        let others: Vec<u64> = (info.region.peers.iter())
            .map(|p| p.store_id)
            .filter(|s| *s != leader.store_id)
            .collect();
        if others.is_empty() {
            continue;
        }
        let to = others[(pick.wrapping_add(i)) % others.len()];
        let store = pd.get_store(leader.store_id).await?;
        if store.status_address.is_empty() {
            continue;
        }
        let url = format!(
            "http://{}/regions/{}/transfer-leader/{to}",
            store.status_address, info.region.id
        );
        // A leader that moved meanwhile answers 409: fine, the shuffle is best effort.
        if let Ok(resp) = http.post(&url).send().await {
            accepted += usize::from(resp.status().as_u16() == 202);
        }
    }
    Ok(accepted)
}

/// Asks PD to merge two adjacent regions, trying the pairs in an order drawn from `pick`
/// (either into the other) until PD takes one (it refuses pairs in different keyspaces, on
/// different stores or not healthy); returns what it asked for.
pub(super) async fn merge_regions(endpoints: Vec<String>, pick: usize) -> Result<String> {
    let pd = pd_client::PdClient::connect(endpoints.clone()).await?;
    let plaintext = security::SecurityManager::plaintext();
    let mut refusals = Vec::new();
    // A region just split or moved is busy for a moment: a few rounds, a second apart.
    for round in 0..MERGE_ROUNDS {
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        refusals.clear();
        let regions = pd.scan_regions(b"", b"", 10_000).await?;
        if regions.len() < 2 {
            bail!("fewer than two regions");
        }
        if let Some(asked) =
            try_merge_pairs(&endpoints, &plaintext, &regions, pick, &mut refusals).await
        {
            return Ok(asked);
        }
    }
    bail!("PD took no merge: {}", refusals.join("; "))
}

const MERGE_ROUNDS: usize = 4;

/// One round of [`merge_regions`]: what PD took, if it took a pair.
async fn try_merge_pairs(
    endpoints: &[String],
    plaintext: &security::SecurityManager,
    regions: &[pd_client::RegionInfo],
    pick: usize,
    refusals: &mut Vec<String>,
) -> Option<String> {
    let pairs = regions.len() - 1;
    for i in 0..pairs {
        let left = (pick + i) % pairs;
        let (a, b) = (&regions[left].region, &regions[left + 1].region);
        let (source, target) = if (pick / 7).is_multiple_of(2) {
            (a, b)
        } else {
            (b, a)
        };
        let body = json!({
            "name": "merge-region",
            "source_region_id": source.id,
            "target_region_id": target.id,
        });
        let asked = crate::ctl::pd_http(
            endpoints,
            plaintext,
            reqwest::Method::POST,
            "operators",
            Some(body),
        )
        .await;
        match asked {
            Ok(_) => return Some(format!("region {} into region {}", source.id, target.id)),
            Err(e) => refusals.push(format!("{}->{}: {e:#}", source.id, target.id)),
        }
    }
    None
}
