//! `rangekv ctl operator`: PD's operators in flight, and operators by hand (pd-ctl's
//! `operator` commands), through PD's HTTP API (`/pd/api/v1/operators`).

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use super::{pd_http, pd_operators, table};

#[derive(Subcommand)]
pub(super) enum OperatorCmd {
    /// The operators PD has in flight: replica moves and merges.
    List,
    /// Move the replica of a region on one store to another store.
    TransferPeer {
        region_id: u64,
        from_store_id: u64,
        to_store_id: u64,
    },
    /// Add an operator by hand.
    Add {
        #[command(subcommand)]
        cmd: AddCmd,
    },
}

#[derive(Subcommand)]
pub(super) enum AddCmd {
    /// Merge a region into an adjacent one (same stores, both healthy; sizes do not matter):
    /// `operator add merge-region <source> <target>`.
    MergeRegion {
        source_region_id: u64,
        target_region_id: u64,
    },
}

pub(super) async fn run(
    cmd: OperatorCmd,
    pd: &[String],
    security: &security::SecurityManager,
    json_out: bool,
) -> Result<()> {
    match cmd {
        OperatorCmd::List => {
            let ops = pd_operators(pd, security).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&ops)?);
            } else {
                table(&["REGION", "OPERATOR", "STEP", "STEPS"], rows(&ops));
            }
        }
        OperatorCmd::TransferPeer {
            region_id,
            from_store_id,
            to_store_id,
        } => {
            let body = json!({
                "name": "transfer-peer",
                "region_id": region_id,
                "from_store_id": from_store_id,
                "to_store_id": to_store_id,
            });
            post(pd, security, body).await?;
            println!(
                "moving region {region_id}'s replica from store {from_store_id} to store {to_store_id}"
            );
        }
        OperatorCmd::Add {
            cmd:
                AddCmd::MergeRegion {
                    source_region_id,
                    target_region_id,
                },
        } => {
            let body = json!({
                "name": "merge-region",
                "source_region_id": source_region_id,
                "target_region_id": target_region_id,
            });
            post(pd, security, body).await?;
            println!("merging region {source_region_id} into region {target_region_id}");
        }
    }
    Ok(())
}

async fn post(pd: &[String], security: &security::SecurityManager, body: Value) -> Result<()> {
    pd_http(pd, security, reqwest::Method::POST, "operators", Some(body)).await
}

/// The table rows of PD's operator list (`GET /pd/api/v1/operators`): region, kind, current
/// step, steps.
fn rows(ops: &[Value]) -> Vec<Vec<String>> {
    ops.iter()
        .map(|o| {
            let steps: Vec<String> = o["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            vec![
                o["region_id"].to_string(),
                o["desc"].as_str().unwrap_or_default().to_owned(),
                o["step"].to_string(),
                steps.join(" -> "),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_operators_and_merges_are_listed() {
        let ops = json!([
            {"region_id": 4, "desc": "transfer-peer", "step": 1,
             "steps": ["AddLearner(..)", "Promote(..)", "Remove(..)"]},
            {"region_id": 5, "desc": "merge-region", "step": 0,
             "steps": ["MergeRegion { source: 5, target: 6 }"], "target_region_id": 6},
        ]);
        let rows = rows(ops.as_array().unwrap());
        assert_eq!(
            rows[0],
            [
                "4",
                "transfer-peer",
                "1",
                "AddLearner(..) -> Promote(..) -> Remove(..)"
            ]
        );
        assert_eq!(
            rows[1],
            [
                "5",
                "merge-region",
                "0",
                "MergeRegion { source: 5, target: 6 }"
            ]
        );
    }

    #[test]
    fn merge_region_takes_a_source_and_a_target() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: OperatorCmd,
        }
        let cli = Cli::try_parse_from(["operator", "add", "merge-region", "5", "6"]).unwrap();
        assert!(matches!(
            cli.cmd,
            OperatorCmd::Add {
                cmd: AddCmd::MergeRegion {
                    source_region_id: 5,
                    target_region_id: 6
                }
            }
        ));
        assert!(Cli::try_parse_from(["operator", "add", "merge-region", "5"]).is_err());
    }
}
