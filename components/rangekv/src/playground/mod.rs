//! `rangekv playground`: a local cluster, each node its own child process, until Ctrl-C;
//! `rangekv playground scale-out` / `scale-in` grow and shrink a running one ([`scale`]).

mod pd_scale;
mod scale;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rangekv::local_cluster::{LocalCluster, LocalClusterConfig};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlaygroundArgs {
    #[command(subcommand)]
    scale: Option<scale::ScaleCmd>,
    /// Number of stores.
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Number of PD nodes (a replicated PD needs 3).
    #[arg(long, default_value_t = 3)]
    pd: usize,
    /// Host to bind every node to.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Client port of the first PD node; the others use every other port after it.
    #[arg(long, default_value_t = 2379)]
    pd_port: u16,
    /// Port of the first store; the others follow.
    #[arg(long, default_value_t = 20160)]
    store_port: u16,
    /// Status (HTTP: /metrics, /status) port of the first store; the others follow.
    /// Default: the store port + 20.
    #[arg(long)]
    status_port: Option<u16>,
    /// Keep data here (default: a temporary directory removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run a short demo workload once the cluster serves.
    #[arg(long)]
    demo: bool,
    /// Exit after the demo instead of waiting for Ctrl-C.
    #[arg(long)]
    exit_after_demo: bool,
    /// Mutual TLS on every connection, with a development CA and certificate made in
    /// `<data-dir>/certs` (kept there for clients: the printed hints use them).
    #[arg(long)]
    tls: bool,
    /// A configuration file for every store (as `rangekv server --config`), e.g. to tune
    /// `[split]` or `[raftstore]`.
    #[arg(long)]
    server_config: Option<PathBuf>,
}

pub fn run(args: PlaygroundArgs) -> Result<()> {
    if let Some(cmd) = args.scale {
        return scale::run(cmd);
    }
    if args.stores == 0 || args.pd == 0 {
        bail!("need at least one PD node and one store");
    }
    let temp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("rangekv-playground-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let bin = std::env::current_exe().context("locating the rangekv executable")?;
    let mut cfg = LocalClusterConfig {
        bin,
        data_dir: data_dir.clone(),
        host: args.host.clone(),
        pd_port: args.pd_port,
        store_port: args.store_port,
        status_port: Some(args.status_port.unwrap_or(args.store_port + 20)),
        pds: args.pd,
        stores: args.stores,
        server_args: match &args.server_config {
            Some(path) => {
                let path = std::fs::canonicalize(path)
                    .with_context(|| format!("server config {}", path.display()))?;
                vec!["--config".into(), path.display().to_string()]
            }
            None => vec![],
        },
        pd_args: vec!["--max-replicas".into(), args.stores.min(3).to_string()],
        store_env: vec![],
        tls: None,
        node_ips: None,
    };
    let tls_hint = if args.tls {
        let issued = cfg.with_tls(&data_dir.join("certs"))?;
        format!(
            " --ca-path {} --cert-path {} --key-path {}",
            issued.ca.display(),
            issued.cert.display(),
            issued.key.display()
        )
    } else {
        String::new()
    };
    let security = cfg.security()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Listen for Ctrl-C / SIGTERM from the start, so that an interrupted start-up still stops
    // every node it started (the cluster is dropped on the way out).
    let mut stop = rt.spawn(crate::shutdown_signal());
    println!(
        "starting {} PD node(s) and {} store(s); data in {}",
        args.pd,
        args.stores,
        data_dir.display()
    );
    let tls_files = cfg
        .tls
        .as_ref()
        .map(|i| [i.ca.clone(), i.cert.clone(), i.key.clone()]);
    let mut cluster = LocalCluster::start(cfg)?;
    let started = Instant::now();
    let endpoints = cluster.pd_endpoints();
    let client = rt.block_on(async {
        tokio::select! {
            ready = crate::ctl::wait_cluster_ready(&endpoints, &security, args.stores, Duration::from_secs(90)) => ready,
            _ = &mut stop => bail!("interrupted"),
        }
    });
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            cluster.shutdown();
            return Err(e.context(format!("logs are in {}", data_dir.display())));
        }
    };
    println!("cluster ready in {:.1}s", started.elapsed().as_secs_f64());
    println!("  PD endpoints: {}", endpoints.join(","));
    for (i, (node, addr)) in cluster.stores.iter().zip(cluster.store_addrs()).enumerate() {
        println!(
            "  {}: {addr}, status {} (pid {}, log {})",
            node.name,
            security.http_url(&cluster.status_addr(i).unwrap_or_default(), "/metrics"),
            node.pid().unwrap_or(0),
            node.log_path().display()
        );
    }
    println!(
        "try: rangekv ctl --pd {}{tls_hint} store list",
        endpoints[0]
    );
    let cluster = Arc::new(Mutex::new(cluster));
    let handle = scale::Handle {
        pd: endpoints.clone(),
        tls: tls_files,
    };
    let shutdown = |cluster: &Arc<Mutex<LocalCluster>>| {
        scale::retire(&data_dir);
        cluster.lock().expect("cluster lock").shutdown();
    };
    if let Err(e) = scale::serve(&rt, &data_dir, &handle, cluster.clone()) {
        shutdown(&cluster);
        return Err(e);
    }
    let dir_hint = match &args.data_dir {
        Some(d) => format!(" --data-dir {}", d.display()),
        None => String::new(),
    };
    println!("grow it: rangekv playground scale-out --stores 1{dir_hint}");
    // A real id, so that the hint runs as printed (the last store: it holds replicas, which
    // PD moves to the others first).
    let last_store = rt
        .block_on(async {
            let pd = crate::ctl::connect_pd(&endpoints, &security).await?;
            anyhow::Ok(pd.get_all_stores(true).await?.iter().map(|s| s.id).max())
        })
        .ok()
        .flatten();
    if let Some(id) = last_store {
        println!("shrink it: rangekv playground scale-in --store {id}{dir_hint}");
    }
    if args.demo {
        let demo = rt.block_on(async {
            tokio::select! {
                r = demo(&client) => r,
                _ = &mut stop => bail!("interrupted"),
            }
        });
        if let Err(e) = demo {
            shutdown(&cluster);
            return Err(e);
        }
        if args.exit_after_demo {
            shutdown(&cluster);
            return Ok(());
        }
    }
    println!("press Ctrl-C to stop");
    let _ = rt.block_on(stop);
    println!("stopping all nodes");
    shutdown(&cluster);
    Ok(())
}

/// A short workload: writes, reads, a cross-key scan, a compare-and-swap and deletes.
async fn demo(client: &client::RawClient) -> Result<()> {
    let n = 1000u32;
    let started = Instant::now();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("demo/{i:05}").into_bytes(),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    for chunk in pairs.chunks(100) {
        client.batch_put(chunk.to_vec()).await?;
    }
    println!(
        "demo: wrote {n} keys in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let v = client.get(b"demo/00042".to_vec()).await?;
    println!(
        "demo: get demo/00042 = {:?}",
        v.as_deref().map(String::from_utf8_lossy)
    );
    let scanned = client
        .scan(b"demo/".to_vec(), b"demo0".to_vec(), 10_000)
        .await?;
    println!("demo: scan demo/ .. found {} keys", scanned.len());
    if scanned.len() != n as usize {
        bail!("demo scan found {} keys, expected {n}", scanned.len());
    }
    let (prev, swapped) = client
        .compare_and_swap(b"demo/counter".to_vec(), None, b"1".to_vec())
        .await?;
    println!(
        "demo: compare-and-swap demo/counter (absent -> 1): swapped={swapped}, previous={prev:?}"
    );
    client
        .delete_range(b"demo/".to_vec(), b"demo0".to_vec())
        .await?;
    let left = client
        .scan(b"demo/".to_vec(), b"demo0".to_vec(), 10)
        .await?;
    println!("demo: deleted the range, {} keys left", left.len());
    Ok(())
}
