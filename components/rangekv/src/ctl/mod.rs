//! `rangekv ctl`: look at a cluster and run raw KV commands. Tables for people, `--json` for
//! scripts.

mod operator;
mod pd_http;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use pd_client::PdClient;
use serde_json::json;

pub(crate) use pd_http::{pd_http, pd_learners, pd_operators};
use pd_http::{pd_request, region_stats};

#[derive(clap::Args)]
pub struct CtlArgs {
    /// PD endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pd: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Stores.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
    /// Regions.
    Region {
        #[command(subcommand)]
        cmd: RegionCmd,
    },
    /// Transactions: locks and versions of keys.
    Txn {
        #[command(subcommand)]
        cmd: TxnCmd,
    },
    /// PD members.
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
    /// PD's operators: replica moves and merges.
    Operator {
        #[command(subcommand)]
        cmd: operator::OperatorCmd,
    },
    /// PD's checkers and schedulers.
    Scheduler {
        #[command(subcommand)]
        cmd: SchedulerCmd,
    },
    /// Read a key.
    Get { key: String },
    /// Write a key.
    Put { key: String, value: String },
    /// Delete a key.
    Delete { key: String },
    /// Scan keys in [start, end).
    Scan {
        #[arg(long, default_value = "")]
        start: String,
        /// Exclusive end; empty means the end of the keyspace.
        #[arg(long, default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Every store PD knows.
    List,
    /// Remove a store: PD moves its replicas to other stores, then marks it Tombstone.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum RegionCmd {
    /// Every region, in key order.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: i32,
    },
    /// The region holding a key.
    Get { key: String },
    /// Split the region holding a key at that key.
    Split {
        key: String,
        /// The key is a transactional key: split at its encoded form, where transactional
        /// data and TiKV's transactional clients cut regions.
        #[arg(long)]
        txn: bool,
    },
    /// Check that every replica of the region holding a key has the same data (fails if not).
    Check { key: String },
}

#[derive(Subcommand)]
enum TxnCmd {
    /// The lock, commit records and stored values of a transactional key, as the leader of its
    /// region holds them.
    Mvcc { key: String },
}

#[derive(Subcommand)]
enum SchedulerCmd {
    /// The checkers and schedulers PD runs.
    List,
}

#[derive(Subcommand)]
enum MemberCmd {
    /// PD members, their roles and which leads.
    List,
    /// Add a PD member: it joins as a learner and votes once it caught up. Then start it on an
    /// empty data directory with `--initial-cluster-state existing`.
    Add {
        /// The new member's name (its `--name`).
        name: String,
        /// Where it serves clients and peers, `http://host:port`.
        url: String,
    },
    /// Remove a PD member (a member that applies its own removal stops).
    Remove {
        /// The member's name.
        name: String,
    },
}

pub fn run(args: CtlArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

fn show_key(k: &[u8]) -> String {
    String::from_utf8(k.to_vec()).unwrap_or_else(|_| format!("0x{}", hex(k)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Prints rows with columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn region_json(
    r: &proto::metapb::Region,
    leader: Option<&proto::metapb::Peer>,
) -> serde_json::Value {
    let epoch = r.region_epoch.unwrap_or_default();
    json!({
        "id": r.id,
        "start_key": show_key(&r.start_key),
        "end_key": show_key(&r.end_key),
        "epoch": {"conf_ver": epoch.conf_ver, "version": epoch.version},
        "peers": r.peers.iter().map(|p| json!({"id": p.id, "store_id": p.store_id, "role": format!("{:?}", p.role())})).collect::<Vec<_>>(),
        "leader_store_id": leader.map(|l| l.store_id),
    })
}

fn region_row(r: &proto::metapb::Region, leader: Option<&proto::metapb::Peer>) -> Vec<String> {
    let epoch = r.region_epoch.unwrap_or_default();
    vec![
        r.id.to_string(),
        format!("{:?}", show_key(&r.start_key)),
        format!("{:?}", show_key(&r.end_key)),
        format!("{}/{}", epoch.conf_ver, epoch.version),
        r.peers
            .iter()
            .map(|p| p.store_id.to_string())
            .collect::<Vec<_>>()
            .join(","),
        leader.map_or("-".into(), |l| l.store_id.to_string()),
    ]
}

const REGION_HEADER: [&str; 6] = ["ID", "START", "END", "EPOCH(conf/ver)", "STORES", "LEADER"];

/// A PD client connecting with `security`.
pub(crate) async fn connect_pd(
    endpoints: &[String],
    security: &security::SecurityManager,
) -> pd_client::Result<PdClient> {
    let config = pd_client::PdClientConfig {
        security: security.clone(),
        ..Default::default()
    };
    PdClient::connect_with_config(endpoints.to_vec(), config).await
}

async fn run_async(args: CtlArgs) -> Result<()> {
    let security = args.tls.manager()?;
    let pd = connect_pd(&args.pd, &security)
        .await
        .with_context(|| format!("connecting to PD at {}", args.pd.join(",")))?;
    match args.cmd {
        CtlCmd::Scheduler {
            cmd: SchedulerCmd::List,
        } => {
            let body = pd_request(
                &args.pd,
                &security,
                reqwest::Method::GET,
                "schedulers",
                None,
            )
            .await?;
            let names: Vec<String> = serde_json::from_str(&body).context("PD's scheduler list")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&names)?);
            } else {
                for n in names {
                    println!("{n}");
                }
            }
        }
        CtlCmd::Operator { cmd } => operator::run(cmd, &args.pd, &security, args.json).await?,
        CtlCmd::Store {
            cmd: StoreCmd::Remove { id },
        } => {
            remove_store(&args.pd, &security, id).await?;
            println!("store {id} is Offline: PD moves its replicas away, then marks it Tombstone");
        }
        CtlCmd::Store {
            cmd: StoreCmd::List,
        } => {
            let stores = pd.get_all_stores(false).await?;
            // Replicas and leaders per store, from PD's region map.
            let mut counts: std::collections::HashMap<u64, (usize, usize)> = Default::default();
            for r in pd.scan_regions(b"", b"", 1_000_000).await? {
                for p in &r.region.peers {
                    counts.entry(p.store_id).or_default().0 += 1;
                }
                if let Some(l) = r.leader {
                    counts.entry(l.store_id).or_default().1 += 1;
                }
            }
            let count = |id: u64| counts.get(&id).copied().unwrap_or_default();
            if args.json {
                let v: Vec<_> = stores
                    .iter()
                    .map(|s| json!({"id": s.id, "address": s.address, "state": s.state, "version": s.version, "last_heartbeat": s.last_heartbeat, "region_count": count(s.id).0, "leader_count": count(s.id).1}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                table(
                    &["ID", "ADDRESS", "STATE", "REGIONS", "LEADERS", "VERSION"],
                    stores
                        .iter()
                        .map(|s| {
                            vec![
                                s.id.to_string(),
                                s.address.clone(),
                                format!("{:?}", s.state()),
                                count(s.id).0.to_string(),
                                count(s.id).1.to_string(),
                                s.version.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        CtlCmd::Region {
            cmd: RegionCmd::List { limit },
        } => {
            let regions = pd.scan_regions(b"", b"", limit).await?;
            // Sizes and down replicas as the regions' leaders last reported them (PD's HTTP
            // API); without it the list still shows the regions.
            let stats = region_stats(&args.pd, &security).await.unwrap_or_default();
            if args.json {
                let v: Vec<_> = regions
                    .iter()
                    .map(|r| {
                        let mut v = region_json(&r.region, r.leader.as_ref());
                        if let Some(st) = stats.get(&r.region.id) {
                            v["approximate_size_mib"] = json!(st.size_mib);
                            v["down_store_ids"] = json!(st.down_stores);
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut header = REGION_HEADER.to_vec();
                header.extend(["SIZE(MiB)", "DOWN"]);
                table(
                    &header,
                    regions
                        .iter()
                        .map(|r| {
                            let mut row = region_row(&r.region, r.leader.as_ref());
                            let st = stats.get(&r.region.id);
                            row.push(st.map_or("-".into(), |s| s.size_mib.to_string()));
                            row.push(st.filter(|s| !s.down_stores.is_empty()).map_or(
                                "-".into(),
                                |s| {
                                    s.down_stores
                                        .iter()
                                        .map(u64::to_string)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                },
                            ));
                            row
                        })
                        .collect(),
                );
            }
        }
        CtlCmd::Region {
            cmd: RegionCmd::Get { key },
        } => {
            let r = pd.get_region(key.as_bytes()).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&region_json(&r.region, r.leader.as_ref()))?
                );
            } else {
                table(
                    &REGION_HEADER,
                    vec![region_row(&r.region, r.leader.as_ref())],
                );
            }
        }
        CtlCmd::Region {
            cmd: RegionCmd::Split { key, txn },
        } => {
            let regions = split_region(&pd, key.as_bytes(), txn).await?;
            if args.json {
                let v: Vec<_> = regions.iter().map(|r| region_json(r, None)).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                table(
                    &REGION_HEADER,
                    regions.iter().map(|r| region_row(r, None)).collect(),
                );
            }
        }
        CtlCmd::Region {
            cmd: RegionCmd::Check { key },
        } => {
            let outcome = rangekv::region_check::check_region(&pd, key.as_bytes()).await?;
            if args.json {
                let v: Vec<_> = outcome
                    .replicas
                    .iter()
                    .map(|r| json!({"store_id": r.store_id, "peer_id": r.peer_id, "hash": r.hash, "verdict": r.verdict}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "region_id": outcome.region_id,
                        "index": outcome.index,
                        "leader_hash": outcome.leader_hash,
                        "consistent": outcome.consistent(),
                        "replicas": v,
                    }))?
                );
            } else {
                println!(
                    "region {} checked at log index {}; leader's hash {:08x}",
                    outcome.region_id, outcome.index, outcome.leader_hash
                );
                table(
                    &["STORE", "PEER", "HASH", "VERDICT"],
                    outcome
                        .replicas
                        .iter()
                        .map(|r| {
                            vec![
                                r.store_id.to_string(),
                                r.peer_id.to_string(),
                                r.hash.map_or("-".into(), |h| format!("{h:08x}")),
                                r.verdict.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            if !outcome.consistent() {
                bail!(
                    "region {} is NOT consistent: see the verdicts above",
                    outcome.region_id
                );
            }
        }
        CtlCmd::Txn {
            cmd: TxnCmd::Mvcc { key },
        } => {
            let v = key_mvcc(&pd, key.as_bytes()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("key {key:?} on store {}", v["store_id"]);
                match v["lock"].as_object() {
                    Some(l) => println!(
                        "lock: {} by transaction {} (primary {}, ttl {} ms)",
                        l["type"], l["start_ts"], l["primary"], l["ttl"]
                    ),
                    None => println!("lock: none"),
                }
                table(
                    &["COMMIT TS", "TYPE", "START TS", "SHORT VALUE"],
                    v["writes"]
                        .as_array()
                        .map(|w| {
                            w.iter()
                                .map(|w| {
                                    vec![
                                        w["commit_ts"].to_string(),
                                        w["type"].as_str().unwrap_or("?").to_owned(),
                                        w["start_ts"].to_string(),
                                        w["short_value"].as_str().unwrap_or("-").to_owned(),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                );
            }
        }
        CtlCmd::Member {
            cmd: MemberCmd::Add { name, url },
        } => {
            let body = pd_request(
                &args.pd,
                &security,
                reqwest::Method::POST,
                "members",
                Some(json!({"name": name, "url": url})),
            )
            .await
            .with_context(|| format!("adding PD member {name}"))?;
            let added: serde_json::Value =
                serde_json::from_str(&body).context("PD's answer to adding a member")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                println!(
                    "added PD member {name} (member id {}) at {} as a learner; start it with \
                     --initial-cluster-state existing on an empty data directory: it votes once \
                     it caught up",
                    added["member_id"], added["url"]
                );
            }
        }
        CtlCmd::Member {
            cmd: MemberCmd::Remove { name },
        } => {
            pd_http(
                &args.pd,
                &security,
                reqwest::Method::DELETE,
                &format!("members/name/{name}"),
                None,
            )
            .await
            .with_context(|| format!("removing PD member {name}"))?;
            println!("removed PD member {name}");
        }
        CtlCmd::Member {
            cmd: MemberCmd::List,
        } => {
            let resp = pd.get_members().await?;
            let leader = resp.leader.as_ref().map(|l| l.member_id);
            let learners = pd_learners(&args.pd, &security).await;
            let role = |id: u64| {
                if learners.contains(&id) {
                    "learner"
                } else {
                    "voter"
                }
            };
            if args.json {
                let v: Vec<_> = resp
                    .members
                    .iter()
                    .map(|m| json!({"name": m.name, "member_id": m.member_id, "client_urls": m.client_urls, "role": role(m.member_id), "leader": Some(m.member_id) == leader}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"cluster_id": pd.cluster_id(), "members": v})
                    )?
                );
            } else {
                println!("cluster id: {}", pd.cluster_id());
                table(
                    &["NAME", "MEMBER ID", "CLIENT URLS", "ROLE", "LEADER"],
                    resp.members
                        .iter()
                        .map(|m| {
                            vec![
                                m.name.clone(),
                                m.member_id.to_string(),
                                m.client_urls.join(","),
                                role(m.member_id).to_owned(),
                                if Some(m.member_id) == leader {
                                    "yes".into()
                                } else {
                                    "".into()
                                },
                            ]
                        })
                        .collect(),
                );
            }
        }
        cmd => raw_command(cmd, args.pd, &security, args.json).await?,
    }
    Ok(())
}

async fn raw_command(
    cmd: CtlCmd,
    endpoints: Vec<String>,
    security: &security::SecurityManager,
    as_json: bool,
) -> Result<()> {
    let config = client::Config::default().with_security(security.clone());
    let client = client::RawClient::with_config(endpoints, config).await?;
    match cmd {
        CtlCmd::Get { key } => {
            let v = client.get(key.clone().into_bytes()).await?;
            match (as_json, v) {
                (true, v) => println!(
                    "{}",
                    json!({"key": key, "value": v.as_deref().map(show_key)})
                ),
                (false, Some(v)) => println!("{}", show_key(&v)),
                (false, None) => bail!("key {key:?} not found"),
            }
        }
        CtlCmd::Put { key, value } => {
            client
                .put(key.clone().into_bytes(), value.into_bytes())
                .await?;
            if as_json {
                println!("{}", json!({"ok": true}));
            } else {
                println!("OK");
            }
        }
        CtlCmd::Delete { key } => {
            client.delete(key.into_bytes()).await?;
            if as_json {
                println!("{}", json!({"ok": true}));
            } else {
                println!("OK");
            }
        }
        CtlCmd::Scan { start, end, limit } => {
            let pairs = client
                .scan(start.into_bytes(), end.into_bytes(), limit)
                .await?;
            if as_json {
                let v: Vec<_> = pairs
                    .iter()
                    .map(|(k, v)| json!({"key": show_key(k), "value": show_key(v)}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                table(
                    &["KEY", "VALUE"],
                    pairs
                        .iter()
                        .map(|(k, v)| vec![show_key(k), show_key(v)])
                        .collect(),
                );
            }
        }
        _ => unreachable!("metadata commands are handled by the caller"),
    }
    Ok(())
}

/// Waits until PD is up, the cluster is bootstrapped with at least `stores` stores, and a raw
/// write and read go through; returns a connected client.
/// Asks PD (whichever member leads) to remove store `id`.
async fn remove_store(
    endpoints: &[String],
    security: &security::SecurityManager,
    id: u64,
) -> Result<()> {
    pd_http(
        endpoints,
        security,
        reqwest::Method::DELETE,
        &format!("store/{id}"),
        None,
    )
    .await
    .with_context(|| format!("removing store {id}"))
}

pub async fn wait_cluster_ready(
    endpoints: &[String],
    security: &security::SecurityManager,
    stores: usize,
    timeout: Duration,
) -> Result<client::RawClient> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match probe(endpoints, security, stores).await {
            Ok(c) => return Ok(c),
            Err(e) => last_err = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("cluster not ready after {timeout:?}: {last_err}")
}

async fn probe(
    endpoints: &[String],
    security: &security::SecurityManager,
    stores: usize,
) -> Result<client::RawClient> {
    let pd = connect_pd(endpoints, security).await?;
    if !pd.is_bootstrapped().await? {
        bail!("cluster not bootstrapped yet");
    }
    let n = pd.get_all_stores(true).await?.len();
    if n < stores {
        bail!("{n} of {stores} stores registered");
    }
    let config = client::Config::default().with_security(security.clone());
    let client = client::RawClient::with_config(endpoints.to_vec(), config).await?;
    client
        .put(b"__rangekv_ready".to_vec(), b"1".to_vec())
        .await?;
    client.get(b"__rangekv_ready".to_vec()).await?;
    Ok(client)
}

/// Asks the leader of the region holding `key` to split it at `key`. A new region may not have
/// a leader PD knows of yet: then its peers are tried, following their NotLeader hints.
pub(crate) async fn split_region(
    pd: &PdClient,
    key: &[u8],
    txn: bool,
) -> Result<Vec<proto::metapb::Region>> {
    use proto::kvrpcpb::{Context as KvContext, SplitRegionRequest};
    use proto::tikvpb::tikv_client::TikvClient;

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_error = String::from("no attempt");
    while Instant::now() < deadline {
        // A transactional key lives (and is routed) in its encoded form.
        let located = if txn {
            storage::mvcc::Key::from_raw(key).into_encoded()
        } else {
            key.to_vec()
        };
        let info = pd.get_region(&located).await?;
        let mut targets: Vec<proto::metapb::Peer> = info.leader.into_iter().collect();
        targets.extend(info.region.peers.iter().copied());
        let mut tried = Vec::new();
        while let Some(peer) = targets.first().copied() {
            targets.remove(0);
            if tried.contains(&peer.store_id) {
                continue;
            }
            tried.push(peer.store_id);
            let store = pd.get_store(peer.store_id).await?;
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{}", store.address))?;
            let Ok(channel) = pd.security().connect(endpoint).await else {
                last_error = format!("store {} at {} unreachable", store.id, store.address);
                continue;
            };
            let mut kv = TikvClient::new(channel);
            let req = SplitRegionRequest {
                context: Some(KvContext {
                    region_id: info.region.id,
                    region_epoch: info.region.region_epoch,
                    peer: Some(peer),
                    ..Default::default()
                }),
                split_keys: vec![key.to_vec().into()],
                is_raw_kv: !txn,
                ..Default::default()
            };
            let resp = match kv.split_region(req).await {
                Ok(r) => r.into_inner(),
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    bail!("{}", status.message())
                }
                Err(status) => {
                    last_error = status.to_string();
                    continue;
                }
            };
            match resp.region_error {
                None => return Ok(resp.regions),
                Some(e) => {
                    last_error = e.message.clone();
                    if let Some(leader) = e.not_leader.and_then(|n| n.leader) {
                        targets.insert(0, leader);
                    } else if e.key_not_in_region.is_some() || e.epoch_not_match.is_some() {
                        break; // The region changed: ask PD again.
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("split at {:?} failed: {last_error}", show_key(key))
}

/// The MVCC history of a transactional key from its region leader's status server.
async fn key_mvcc(pd: &PdClient, key: &[u8]) -> Result<serde_json::Value> {
    // Transactional data is routed by the key's encoded form.
    let encoded = storage::mvcc::Key::from_raw(key).into_encoded();
    let info = pd.get_region(&encoded).await?;
    let store_id = info
        .leader
        .map(|l| l.store_id)
        .or_else(|| info.region.peers.first().map(|p| p.store_id))
        .context("the region has no peers")?;
    let store = pd.get_store(store_id).await?;
    if store.status_address.is_empty() {
        bail!("store {store_id} has no status server (start it with --status-addr)");
    }
    let security = pd.security();
    let url = security.http_url(
        &store.status_address,
        &format!("/mvcc/hex/{}", hex::encode(key)),
    );
    let resp = security
        .http_client_builder()
        .build()?
        .get(&url)
        .send()
        .await?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.context("reading the store's answer")?;
    if !status.is_success() {
        bail!("store {store_id}: {}", v["error"]);
    }
    Ok(v)
}
