//! PD members of a running playground joining and leaving PD's Raft group:
//! `rangekv playground scale-out --pd N` and `scale-in --pd NAME`.
//!
//! - Out, per member: the playground lays out the next member (a name, a free port, an empty
//!   data directory; `add-pd`), PD's leader adds it as a learner (`POST /pd/api/v1/members`,
//!   what `rangekv ctl member add` sends), then the playground starts it (`start-pd`): it joins
//!   with `--initial-cluster-state existing`, gets PD's state by snapshot and is promoted. The
//!   command prints the members each second until every new one votes.
//! - In: PD's leader removes the member (`DELETE /pd/api/v1/members/name/NAME`); the
//!   playground then stops its process and deletes its data (`retire-pd`): a removed member
//!   never serves again.
//!
//! The playground's handle (`playground.json`) follows, so later commands reach PD through the
//! members it has now.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::scale::{send, Target};

/// `(name, voter?)` of every PD member, as PD's leader knows them.
async fn members(t: &Target) -> Result<Vec<(String, bool)>> {
    let resp = t.pd.get_members().await?;
    let learners = crate::ctl::pd_learners(&t.endpoints, &t.security).await;
    Ok(resp
        .members
        .iter()
        .map(|m| (m.name.clone(), !learners.contains(&m.member_id)))
        .collect())
}

fn show(members: &[(String, bool)]) -> String {
    members
        .iter()
        .map(|(name, voter)| format!("{name} {}", if *voter { "voter" } else { "learner" }))
        .collect::<Vec<_>>()
        .join(" | ")
}

pub(super) async fn scale_out(dir: &Path, t: &Target, n: usize, wait: Duration) -> Result<()> {
    if n > 4 {
        bail!("add 1 to 4 PD members at a time");
    }
    let mut added = Vec::new();
    for _ in 0..n {
        let slot = send(dir, "add-pd")?;
        let name = slot["name"].as_str().unwrap_or_default().to_owned();
        let addr = slot["addr"].as_str().unwrap_or_default().to_owned();
        let body = json!({"name": name, "url": format!("http://{addr}")});
        let endpoints = current_endpoints(dir, t);
        let asked = crate::ctl::pd_http(
            &endpoints,
            &t.security,
            reqwest::Method::POST,
            "members",
            Some(body),
        )
        .await;
        if let Err(e) = asked {
            // Never added: the slot is retired, never started.
            let _ = send(dir, &format!("retire-pd {name}"));
            return Err(e).with_context(|| format!("adding PD member {name}"));
        }
        println!("added PD member {name} at {addr} as a learner");
        let started = send(dir, &format!("start-pd {name}"))?;
        println!(
            "started {name} (pid {}, log {})",
            started["pid"],
            slot["log"].as_str().unwrap_or_default()
        );
        added.push(name);
    }
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < wait {
        if let Ok(now) = members(t).await {
            let line = show(&now);
            if line != last {
                println!("[{:>4.0}s] {line}", started.elapsed().as_secs_f64());
                last = line;
            }
            let votes = |name: &String| now.iter().any(|(n, voter)| n == name && *voter);
            if added.iter().all(votes) {
                println!("every new PD member votes");
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("the new PD members do not all vote after {wait:?}: {last}")
}

pub(super) async fn scale_in(dir: &Path, t: &Target, name: &str) -> Result<()> {
    let endpoints = current_endpoints(dir, t);
    crate::ctl::pd_http(
        &endpoints,
        &t.security,
        reqwest::Method::DELETE,
        &format!("members/name/{name}"),
        None,
    )
    .await
    .with_context(|| format!("removing PD member {name}"))?;
    println!("removed PD member {name} from PD's group");
    send(dir, &format!("retire-pd {name}"))?;
    println!("{name}'s process stopped and its data deleted");
    if let Ok(now) = members(t).await {
        println!("PD members: {}", show(&now));
    }
    Ok(())
}

/// The PD endpoints of the playground's handle as it is now (members come and go).
fn current_endpoints(dir: &Path, t: &Target) -> Vec<String> {
    std::fs::read(dir.join(super::scale::HANDLE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<super::scale::Handle>(&b).ok())
        .map_or_else(|| t.endpoints.clone(), |h| h.pd)
}
