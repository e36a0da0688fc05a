//! `ctl`'s requests to PD's HTTP API (`/pd/api/v1/...`): sent to each endpoint in turn until
//! one answers (followers refuse with a client error naming the leader), with the TLS of the
//! command line.

use anyhow::{bail, Context, Result};

/// Sends a request to PD's HTTP API (`/pd/api/v1/<path>`) on whichever member leads.
pub(crate) async fn pd_http(
    endpoints: &[String],
    security: &security::SecurityManager,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<()> {
    pd_request(endpoints, security, method, path, body)
        .await
        .map(|_| ())
}

/// The replica operators PD's leader has in flight (`GET /pd/api/v1/operators`).
pub(crate) async fn pd_operators(
    endpoints: &[String],
    security: &security::SecurityManager,
) -> Result<Vec<serde_json::Value>> {
    let body = pd_request(endpoints, security, reqwest::Method::GET, "operators", None).await?;
    serde_json::from_str(&body).context("PD's operator list")
}

/// Member ids of the PD members that are learners (`GET /pd/api/v1/members`), as the leader
/// knows them (any member answers, a member that was down may know an older list); empty if no
/// member answers.
pub(crate) async fn pd_learners(
    endpoints: &[String],
    security: &security::SecurityManager,
) -> std::collections::HashSet<u64> {
    let members = |endpoints: Vec<String>| async move {
        let body = pd_request(&endpoints, security, reqwest::Method::GET, "members", None)
            .await
            .ok()?;
        serde_json::from_str::<serde_json::Value>(&body).ok()
    };
    let Some(mut v) = members(endpoints.to_vec()).await else {
        return Default::default();
    };
    if let Some(leader_url) = v["leader"]["client_urls"][0].as_str() {
        let leader = leader_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        if let Some(from_leader) = members(vec![leader]).await {
            v = from_leader;
        }
    }
    v["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|m| m["is_learner"].as_bool() == Some(true))
        .filter_map(|m| m["member_id"].as_u64())
        .collect()
}

/// What a region's leader last reported of it, as PD's HTTP API shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RegionStats {
    pub(crate) size_mib: u64,
    pub(crate) down_stores: Vec<u64>,
}

/// Every region's [`RegionStats`] by id (`GET /pd/api/v1/regions`).
pub(crate) async fn region_stats(
    endpoints: &[String],
    security: &security::SecurityManager,
) -> Result<std::collections::HashMap<u64, RegionStats>> {
    let body = pd_request(endpoints, security, reqwest::Method::GET, "regions", None).await?;
    let v: serde_json::Value = serde_json::from_str(&body).context("PD's region list")?;
    Ok(parse_region_stats(&v))
}

fn parse_region_stats(v: &serde_json::Value) -> std::collections::HashMap<u64, RegionStats> {
    let regions = v["regions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    regions
        .iter()
        .filter_map(|r| {
            let id = r["id"].as_u64()?;
            let down_stores = r["down_peers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d["peer"]["store_id"].as_u64())
                .collect();
            let size_mib = r["approximate_size"].as_u64().unwrap_or(0);
            Some((
                id,
                RegionStats {
                    size_mib,
                    down_stores,
                },
            ))
        })
        .collect()
}

/// [`pd_http`], answering the response's body.
pub(crate) async fn pd_request(
    endpoints: &[String],
    security: &security::SecurityManager,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<String> {
    let client = security.http_client_builder().build()?;
    let mut last = String::from("no PD endpoint");
    for ep in endpoints {
        let url = security.http_url(ep, &format!("/pd/api/v1/{path}"));
        let mut req = client.request(method.clone(), url);
        if let Some(body) = &body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(resp.text().await?),
            Ok(resp) => {
                let status = resp.status();
                last = format!("{ep}: {status}: {}", resp.text().await.unwrap_or_default());
                if status.is_client_error() {
                    break;
                }
            }
            Err(e) => last = format!("{ep}: {e}"),
        }
    }
    bail!("{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_stats_come_from_pd_s_region_list() {
        let v = serde_json::json!({
            "count": 2,
            "regions": [
                {"id": 2, "approximate_size": 3, "down_peers": [
                    {"peer": {"id": 11, "store_id": 4}, "down_seconds": 700}
                ]},
                {"id": 5},
                {"no id": true}
            ]
        });
        let stats = parse_region_stats(&v);
        assert_eq!(stats.len(), 2);
        assert_eq!(
            stats[&2],
            RegionStats {
                size_mib: 3,
                down_stores: vec![4]
            }
        );
        assert_eq!(stats[&5], RegionStats::default());
        assert!(parse_region_stats(&serde_json::json!({"count": 0})).is_empty());
    }
}
