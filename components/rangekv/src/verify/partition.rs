//! Network partitions between the nodes of a local cluster, as Jepsen's partition nemeses.
//!
//! Every node of the cluster has its own loopback address and connects from it
//! (`LocalClusterConfig::node_ips`), so an iptables rule `-s A -d B -j DROP` drops what node A
//! sends to node B — on loopback every packet passes the INPUT chain. The rules live in a chain
//! of this run's own (`RKV<pid>-<n>`), jumped to from INPUT: healing flushes it, and the chain
//! is removed when the [`Firewall`] is dropped. Clients connect from `127.0.0.1`: every shape
//! but `clients` leaves them connected to every node (as Jepsen's control node).
//!
//! Shapes, drawn from the seed ([`plan`] is pure):
//! - `halves`: two halves, no traffic between them (one side has a majority, or neither);
//! - `isolate`: one node cut off from every other;
//! - `ring`: a majorities ring — every node sees a majority, no two the same one;
//! - `bridge`: two halves and one node in both;
//! - `one-way`: one node's packets to every other are dropped; theirs still reach it;
//! - `clients`: the clients cut off from one node (both ways) while the nodes still reach each
//!   other, so a leader the clients cannot reach keeps leading: they must find their way
//!   through its followers' answers, or fail cleanly. In [`plan`] the clients are node `n`.
//!
//! Needs root and iptables; `rangekv verify` refuses partition faults without them.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The shape of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Halves,
    Isolate,
    Ring,
    Bridge,
    OneWay,
    Clients,
}

impl Shape {
    const ALL: [Shape; 6] = [
        Shape::Halves,
        Shape::Isolate,
        Shape::Ring,
        Shape::Bridge,
        Shape::OneWay,
        Shape::Clients,
    ];

    pub fn pick(pick: usize) -> Shape {
        Shape::ALL[pick % Shape::ALL.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Halves => "halves",
            Shape::Isolate => "isolate",
            Shape::Ring => "ring",
            Shape::Bridge => "bridge",
            Shape::OneWay => "one-way",
            Shape::Clients => "clients",
        }
    }
}

/// `0..n` in an order drawn from `pick` (a seeded shuffle, so one seed cuts the same way).
fn order(n: usize, pick: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut nodes: Vec<usize> = (0..n).collect();
    nodes.shuffle(&mut rand::rngs::StdRng::seed_from_u64(pick as u64));
    nodes
}

/// The directed pairs `(from, to)` of nodes `0..n` whose packets `shape` drops; `n` stands
/// for the clients (only `clients` cuts them).
pub fn plan(shape: Shape, n: usize, pick: usize) -> Vec<(usize, usize)> {
    let nodes = order(n, pick);
    let mut cut = Vec::new();
    let both = |cut: &mut Vec<(usize, usize)>, a: usize, b: usize| {
        cut.push((a, b));
        cut.push((b, a));
    };
    match shape {
        Shape::Halves | Shape::Bridge => {
            let (a, b) = nodes.split_at(n / 2);
            // The bridge: the first node of the second half, which keeps both sides.
            let bridge = (shape == Shape::Bridge).then(|| b[0]);
            for &x in a {
                for &y in b {
                    if Some(y) != bridge {
                        both(&mut cut, x, y);
                    }
                }
            }
        }
        Shape::Isolate => {
            let lone = nodes[0];
            for &other in &nodes[1..] {
                both(&mut cut, lone, other);
            }
        }
        Shape::OneWay => {
            let lone = nodes[0];
            for &other in &nodes[1..] {
                cut.push((lone, other));
            }
        }
        Shape::Clients => both(&mut cut, nodes[0], n),
        Shape::Ring => {
            // In ring order, each node keeps the nodes within `reach` on either side: itself
            // and 2 * reach others make a majority.
            let majority = n / 2 + 1;
            let reach = (majority - 1).div_ceil(2);
            for i in 0..n {
                for j in (i + 1)..n {
                    let d = (j - i).min(n - (j - i));
                    if d > reach {
                        both(&mut cut, nodes[i], nodes[j]);
                    }
                }
            }
        }
    }
    cut.sort_unstable();
    cut
}

/// This run's iptables chain; see the module docs.
pub struct Firewall {
    chain: String,
}

fn iptables(args: &[&str]) -> Result<()> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .context("running iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Firewall {
    /// Whether partitions can be made here (iptables present, allowed to change rules).
    pub fn available() -> Result<()> {
        iptables(&["-L", "INPUT", "-n"])
            .context("partition faults need iptables and the right to change its rules (root)")
    }

    /// Creates this run's chain and sends INPUT through it.
    pub fn new() -> Result<Firewall> {
        let chain = format!(
            "RKV{}-{}",
            std::process::id(),
            rand::random_range(0..1000u32)
        );
        iptables(&["-N", &chain])?;
        let fw = Firewall { chain };
        iptables(&["-I", "INPUT", "-j", &fw.chain])?;
        Ok(fw)
    }

    /// Drops every packet from `from` to `to`, for each pair of addresses.
    pub fn cut(&self, pairs: &[(String, String)]) -> Result<()> {
        for (from, to) in pairs {
            iptables(&["-A", &self.chain, "-s", from, "-d", to, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Lets everything through again.
    pub fn heal(&self) -> Result<()> {
        iptables(&["-F", &self.chain])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-D", "INPUT", "-j", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Who `node` can still send to.
    fn reaches(cut: &[(usize, usize)], n: usize, node: usize) -> BTreeSet<usize> {
        (0..n).filter(|&o| !cut.contains(&(node, o))).collect()
    }

    #[test]
    fn halves_cut_every_pair_across_and_none_within() {
        let cut = plan(Shape::Halves, 8, 3);
        assert_eq!(cut.len(), 2 * 4 * 4);
        for node in 0..8 {
            assert_eq!(reaches(&cut, 8, node).len(), 4, "{node}");
        }
    }

    #[test]
    fn isolate_and_one_way_single_out_one_node() {
        let cut = plan(Shape::Isolate, 5, 9);
        let lone = (0..5).find(|&x| reaches(&cut, 5, x).len() == 1).unwrap();
        for other in (0..5).filter(|&o| o != lone) {
            assert!(cut.contains(&(lone, other)) && cut.contains(&(other, lone)));
        }
        let cut = plan(Shape::OneWay, 5, 9);
        assert_eq!(cut.len(), 4);
        let from: BTreeSet<usize> = cut.iter().map(|(a, _)| *a).collect();
        assert_eq!(from.len(), 1, "only the lone node's packets are dropped");
    }

    #[test]
    fn a_ring_gives_every_node_a_majority_and_no_two_the_same() {
        for n in [3, 5, 8] {
            let cut = plan(Shape::Ring, n, 1);
            let views: Vec<BTreeSet<usize>> = (0..n).map(|x| reaches(&cut, n, x)).collect();
            for v in &views {
                assert!(v.len() > n / 2, "n={n}: {views:?}");
            }
            if n > 3 {
                let distinct: BTreeSet<&BTreeSet<usize>> = views.iter().collect();
                assert_eq!(distinct.len(), n, "n={n}: {views:?}");
                assert!(!cut.is_empty());
            }
        }
    }

    #[test]
    fn clients_lose_one_node_and_the_nodes_lose_nothing() {
        for pick in 0..6 {
            let cut = plan(Shape::Clients, 5, pick);
            assert_eq!(cut.len(), 2, "{cut:?}");
            let lone = cut.iter().map(|(a, b)| (*a).min(*b)).next().unwrap();
            assert!(lone < 5);
            assert!(
                cut.contains(&(lone, 5)) && cut.contains(&(5, lone)),
                "{cut:?}"
            );
        }
        // Every other shape leaves the clients (node 5 of 5) alone.
        for shape in Shape::ALL.into_iter().filter(|s| *s != Shape::Clients) {
            let cut = plan(shape, 5, 2);
            assert!(
                cut.iter().all(|&(a, b)| a < 5 && b < 5),
                "{shape:?}: {cut:?}"
            );
        }
    }

    #[test]
    fn a_bridge_node_sees_both_sides() {
        let cut = plan(Shape::Bridge, 8, 4);
        let views: Vec<usize> = (0..8).map(|x| reaches(&cut, 8, x).len()).collect();
        assert!(views.contains(&8), "the bridge reaches everyone: {views:?}");
        assert_eq!(
            plan(Shape::Bridge, 8, 4),
            cut,
            "the same pick cuts the same way"
        );
    }
}
