//! `rangekv ctl region check <key>`: are the replicas of a region the same?
//!
//! 1. Finds the region holding the key and its leader through PD, and asks the leader's status
//!    server to start a consistency check (`POST /regions/{id}/consistency-check`): the leader
//!    proposes `ComputeHash`, every replica hashes its copy at that log position, and the
//!    leader proposes `VerifyHash` with its own hash (see `raftstore::consistency`).
//! 2. Polls every replica's status server (`GET /status`) until each reports its verdict for
//!    that check, and prints one line per replica.
//!
//! The command fails (non-zero exit) when a replica differs, or when not every replica could
//! be heard from in time: a check that could not look everywhere is not a pass. Verdicts are
//! re-judged by the hash a strict majority shares ([`by_majority`]), so that a diverged leader
//! is named as the odd one out rather than its healthy followers.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pd_client::PdClient;
use serde_json::Value;

/// One replica's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaVerdict {
    pub store_id: u64,
    pub peer_id: u64,
    /// Its hash of the checked index, if it reported one.
    pub hash: Option<u32>,
    /// "match", "mismatch", "unknown" (it has no hash of that index), "unreachable", or
    /// "removed" (no longer a replica: a membership change ran during the check).
    pub verdict: String,
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub region_id: u64,
    pub index: u64,
    pub leader_hash: u32,
    pub replicas: Vec<ReplicaVerdict>,
}

impl CheckOutcome {
    pub fn consistent(&self) -> bool {
        // Strict: a replica removed during the check ("removed") makes the caller check
        // again rather than pass with fewer replicas than the region has.
        self.replicas.iter().all(|r| r.verdict == "match")
    }
}

/// Runs the check of the region holding `key`. A check that no replica verified (its leader
/// lost leadership before proposing the verification, so none ever will) is started again,
/// a few times.
pub async fn check_region(pd: &PdClient, key: &[u8]) -> Result<CheckOutcome> {
    let mut outcome = check_region_once(pd, key).await?;
    for _ in 0..2 {
        if outcome.replicas.iter().any(|r| r.verdict != "unreachable") {
            break;
        }
        outcome = check_region_once(pd, key).await?;
    }
    Ok(outcome)
}

async fn check_region_once(pd: &PdClient, key: &[u8]) -> Result<CheckOutcome> {
    let security = pd.security();
    let http = security
        .http_client_builder()
        .timeout(Duration::from_secs(40))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (region, index, leader_hash) = loop {
        let info = pd.get_region(key).await?;
        let mut candidates: Vec<u64> = info.leader.iter().map(|l| l.store_id).collect();
        candidates.extend(info.region.peers.iter().map(|p| p.store_id));
        candidates.dedup();
        let mut started = None;
        let mut last_error = String::from("no replica tried");
        for store_id in candidates {
            let status = status_address(pd, store_id).await?;
            let url = format!("{status}/regions/{}/consistency-check", info.region.id);
            match http.post(&url).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let v: Value = resp.json().await.context("reading the check's answer")?;
                    let index = v["index"].as_u64().context("no index in the answer")?;
                    let hash = v["hash"].as_u64().context("no hash in the answer")?;
                    started = Some((index, hash as u32));
                    break;
                }
                Ok(resp) => last_error = format!("store {store_id}: {}", resp.text().await?),
                Err(e) => last_error = format!("store {store_id} at {status}: {e}"),
            }
        }
        if let Some((index, hash)) = started {
            break (info.region, index, hash);
        }
        if Instant::now() > deadline {
            bail!("no replica could start the check: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut replicas = Vec::new();
    for peer in &region.peers {
        let status = status_address(pd, peer.store_id).await?;
        // A replica removed while the check runs never reports: stop waiting for it once PD
        // shows the region without it (the caller may check again).
        let verdict = tokio::select! {
            v = wait_verdict(&http, &status, region.id, index, deadline) => v.ok(),
            () = removed(pd, region.id, peer.id) => Some((None, "removed".to_owned())),
        };
        replicas.push(match verdict {
            Some((hash, verdict)) => ReplicaVerdict {
                store_id: peer.store_id,
                peer_id: peer.id,
                hash,
                verdict,
            },
            None => ReplicaVerdict {
                store_id: peer.store_id,
                peer_id: peer.id,
                hash: None,
                verdict: "unreachable".into(),
            },
        });
    }
    let replicas = by_majority(replicas);
    Ok(CheckOutcome {
        region_id: region.id,
        index,
        leader_hash,
        replicas,
    })
}

/// Re-judges the verdicts by the hash most replicas share. A replica's own verdict compares it
/// with the leader, so when the leader is the one that diverged, the healthy replicas report
/// "mismatch"; an operator needs to know which copy is the odd one out. Without a strict
/// majority hash (or with replicas that could not be asked) the verdicts stay as reported.
pub fn by_majority(mut replicas: Vec<ReplicaVerdict>) -> Vec<ReplicaVerdict> {
    let hashes: Vec<u32> = replicas.iter().filter_map(|r| r.hash).collect();
    if hashes.len() != replicas.len() {
        return replicas;
    }
    let majority = hashes
        .iter()
        .find(|h| hashes.iter().filter(|x| x == h).count() * 2 > hashes.len())
        .copied();
    if let Some(majority) = majority {
        for r in &mut replicas {
            r.verdict = if r.hash == Some(majority) {
                "match".into()
            } else {
                "mismatch".into()
            };
        }
    }
    replicas
}

/// Resolves once PD shows region `region_id` without peer `peer_id` (checked every second).
async fn removed(pd: &PdClient, region_id: u64, peer_id: u64) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(Some(info)) = pd.get_region_by_id(region_id).await {
            if !info.region.peers.iter().any(|p| p.id == peer_id) {
                return;
            }
        }
    }
}

async fn status_address(pd: &PdClient, store_id: u64) -> Result<String> {
    let store = pd.get_store(store_id).await?;
    if store.status_address.is_empty() {
        bail!("store {store_id} has no status server (start it with --status-addr)");
    }
    // A URL: `https` on a TLS cluster.
    Ok(pd.security().http_url(&store.status_address, ""))
}

/// Polls a store's `/status` until its replica of `region_id` reports a verdict for `index`.
async fn wait_verdict(
    http: &reqwest::Client,
    status: &str,
    region_id: u64,
    index: u64,
    deadline: Instant,
) -> Result<(Option<u32>, String)> {
    loop {
        let found = async {
            let v: Value = http
                .get(format!("{status}/status"))
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(verdict_in_status(&v, region_id, index))
        }
        .await;
        if let Ok(Some(verdict)) = found {
            return Ok(verdict);
        }
        if Instant::now() > deadline {
            bail!("no verdict from {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The replica's hash and verdict for the check at `index`, from a store's `/status`; `None`
/// while it has not verified that check yet.
fn verdict_in_status(status: &Value, region_id: u64, index: u64) -> Option<(Option<u32>, String)> {
    let region = status["regions"]
        .as_array()?
        .iter()
        .find(|r| r["id"].as_u64() == Some(region_id))?;
    let verified = &region["last_verified"];
    let verified_index = verified["index"].as_u64()?;
    if verified_index < index {
        return None;
    }
    let hash = (region["hash"]["index"].as_u64() == Some(index))
        .then(|| region["hash"]["hash"].as_u64().map(|h| h as u32))
        .flatten();
    let verdict = if verified_index == index {
        verified["verdict"].as_str().unwrap_or("unknown").to_owned()
    } else {
        // A newer check overtook this one on that replica.
        "unknown".to_owned()
    };
    Some((hash, verdict))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replica(store_id: u64, hash: Option<u32>, verdict: &str) -> ReplicaVerdict {
        ReplicaVerdict {
            store_id,
            peer_id: store_id + 100,
            hash,
            verdict: verdict.into(),
        }
    }

    #[test]
    fn the_odd_replica_out_is_named_even_when_it_leads() {
        // Store 1 leads and diverged: the others compared with it and said "mismatch".
        let judged = by_majority(vec![
            replica(1, Some(7), "match"),
            replica(2, Some(9), "mismatch"),
            replica(3, Some(9), "mismatch"),
        ]);
        let verdicts: Vec<&str> = judged.iter().map(|r| r.verdict.as_str()).collect();
        assert_eq!(verdicts, ["mismatch", "match", "match"]);
        // No majority, or a replica without a hash: the verdicts stay as reported.
        let split = vec![
            replica(1, Some(1), "match"),
            replica(2, Some(2), "mismatch"),
        ];
        assert_eq!(by_majority(split.clone()), split);
        let unknown = vec![
            replica(1, Some(1), "match"),
            replica(2, None, "unreachable"),
            replica(3, Some(1), "match"),
        ];
        assert_eq!(by_majority(unknown.clone()), unknown);
    }

    fn status(verified: Value, hash: Value) -> Value {
        json!({"regions": [
            {"id": 9, "last_verified": null, "hash": null},
            {"id": 2, "last_verified": verified, "hash": hash},
        ]})
    }

    #[test]
    fn verdicts_are_read_from_the_replica_of_the_region_for_the_index() {
        let h = json!({"index": 7, "hash": 42});
        let v = |i: u64, verdict: &str| json!({"index": i, "verdict": verdict});
        // Not there yet: an older check, or none.
        assert_eq!(
            verdict_in_status(&status(v(5, "match"), h.clone()), 2, 7),
            None
        );
        assert_eq!(
            verdict_in_status(&status(Value::Null, h.clone()), 2, 7),
            None
        );
        assert_eq!(
            verdict_in_status(&status(v(5, "match"), h.clone()), 3, 7),
            None
        );
        // This check.
        assert_eq!(
            verdict_in_status(&status(v(7, "match"), h.clone()), 2, 7),
            Some((Some(42), "match".into()))
        );
        assert_eq!(
            verdict_in_status(&status(v(7, "mismatch"), h.clone()), 2, 7),
            Some((Some(42), "mismatch".into()))
        );
        // Overtaken by a newer check: nothing to say about this one.
        assert_eq!(
            verdict_in_status(&status(v(9, "match"), json!({"index": 9, "hash": 1})), 2, 7),
            Some((None, "unknown".into()))
        );
    }
}
