//! `rangekv bench --watch-regions`: how fast a hotspot spreads. While the run phase goes on,
//! PD is asked a few times a second for the regions of the bench's key range and where their
//! leaders are; at the end the bench reports how long it took until the range was first split
//! and until its leaders were spread evenly over the stores.
//!
//! "Evenly" ([`is_even`]): every store that is up leads at least one region of the range and
//! no store leads more than one region more than another. With fewer regions than stores it
//! cannot hold.
//!
//! The assessment is pure ([`Timeline`], time passed in); [`watch`] is the polling loop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

/// Whether `leaders` (regions led per store; stores leading nothing may be absent) is spread
/// evenly over `stores`.
pub fn is_even(leaders: &BTreeMap<u64, usize>, stores: &[u64]) -> bool {
    if stores.is_empty() {
        return false;
    }
    let counts: Vec<usize> = stores
        .iter()
        .map(|s| leaders.get(s).copied().unwrap_or(0))
        .collect();
    let (min, max) = (
        *counts.iter().min().expect("stores"),
        *counts.iter().max().expect("stores"),
    );
    min >= 1 && max - min <= 1
}

/// What the watcher saw, observation by observation.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Regions of the range at the first observation.
    pub regions_at_start: Option<usize>,
    /// Regions at the latest observation.
    pub regions_now: usize,
    /// Leaders per store at the latest observation.
    pub leaders_now: BTreeMap<u64, usize>,
    /// When the range first had more regions than at the start.
    pub first_split: Option<Duration>,
    /// When the leaders were first spread evenly (see [`is_even`]).
    pub first_even: Option<Duration>,
    /// Whether they were still even at the latest observation.
    pub even_now: bool,
}

impl Timeline {
    /// Records one observation at `at` (since the run started): the leader's store of every
    /// region of the range (`None`: no leader known) and the stores that are up.
    pub fn observe(&mut self, at: Duration, leader_stores: &[Option<u64>], stores: &[u64]) {
        let regions = leader_stores.len();
        let start = *self.regions_at_start.get_or_insert(regions);
        if regions > start && self.first_split.is_none() {
            self.first_split = Some(at);
        }
        let mut leaders = BTreeMap::new();
        for s in leader_stores.iter().flatten() {
            *leaders.entry(*s).or_insert(0) += 1;
        }
        self.even_now = is_even(&leaders, stores);
        if self.even_now && self.first_even.is_none() {
            self.first_even = Some(at);
        }
        self.regions_now = regions;
        self.leaders_now = leaders;
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let secs = |d: Option<Duration>| match d {
            Some(d) => format!("{:.1}s", d.as_secs_f64()),
            None => "never".to_owned(),
        };
        format!(
            "regions: {} at start, {} at the end; first split after {}; leaders even after {} \
             (at the end: {:?}{})",
            self.regions_at_start.unwrap_or(0),
            self.regions_now,
            secs(self.first_split),
            secs(self.first_even),
            self.leaders_now,
            if self.even_now { ", even" } else { "" }
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "regions_at_start": self.regions_at_start.unwrap_or(0),
            "regions_at_end": self.regions_now,
            "first_split_secs": self.first_split.map(|d| d.as_secs_f64()),
            "leaders_even_secs": self.first_even.map(|d| d.as_secs_f64()),
            "leaders_at_end": self.leaders_now.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// Polls PD every `every` until `deadline`, recording into a [`Timeline`] whose clock starts
/// at `started`. Failed polls are skipped (PD may be changing leaders).
pub async fn watch(
    pd: pd_client::PdClient,
    range: (Vec<u8>, Vec<u8>),
    started: Instant,
    deadline: Instant,
    every: Duration,
) -> Timeline {
    let mut timeline = Timeline::default();
    let mut tick = tokio::time::interval(every);
    while Instant::now() < deadline {
        tick.tick().await;
        let (Ok(regions), Ok(stores)) = (
            pd.scan_regions(&range.0, &range.1, 0).await,
            pd.get_all_stores(true).await,
        ) else {
            continue;
        };
        let up: Vec<u64> = stores
            .iter()
            .filter(|s| s.state() == proto::metapb::StoreState::Up)
            .map(|s| s.id)
            .collect();
        let leader_stores: Vec<Option<u64>> = regions
            .iter()
            .map(|r| r.leader.as_ref().map(|p| p.store_id))
            .collect();
        timeline.observe(started.elapsed(), &leader_stores, &up);
    }
    timeline
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(u64, usize)]) -> BTreeMap<u64, usize> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn even_means_every_store_leads_and_counts_differ_by_at_most_one() {
        let stores = [1, 2, 3];
        for (leaders, even) in [
            (counts(&[]), false),
            (counts(&[(1, 1)]), false),
            (counts(&[(1, 1), (2, 1)]), false),
            (counts(&[(1, 1), (2, 1), (3, 1)]), true),
            (counts(&[(1, 2), (2, 1), (3, 1)]), true),
            (counts(&[(1, 3), (2, 1), (3, 1)]), false),
            (counts(&[(1, 2), (2, 2), (3, 2)]), true),
            // A store that is not up does not count.
            (counts(&[(1, 1), (2, 1), (3, 1), (4, 5)]), true),
        ] {
            assert_eq!(is_even(&leaders, &stores), even, "{leaders:?}");
        }
        assert!(!is_even(&counts(&[(1, 1)]), &[]));
    }

    #[test]
    fn first_split_is_the_first_observation_with_more_regions_than_at_start() {
        let mut t = Timeline::default();
        let s = |n| Duration::from_secs(n);
        t.observe(s(0), &[Some(1)], &[1, 2, 3]);
        t.observe(s(1), &[Some(1)], &[1, 2, 3]);
        assert_eq!(t.first_split, None);
        t.observe(s(2), &[Some(1), Some(1)], &[1, 2, 3]);
        t.observe(s(3), &[Some(1), Some(1), Some(2)], &[1, 2, 3]);
        assert_eq!(t.first_split, Some(s(2)));
        assert_eq!(t.regions_at_start, Some(1));
        assert_eq!(t.regions_now, 3);
    }

    #[test]
    fn first_even_is_kept_while_even_now_follows_the_latest_observation() {
        let mut t = Timeline::default();
        let s = |n| Duration::from_secs(n);
        t.observe(s(0), &[Some(1), Some(1), None], &[1, 2, 3]);
        assert_eq!(t.first_even, None);
        t.observe(s(4), &[Some(1), Some(2), Some(3)], &[1, 2, 3]);
        assert_eq!(t.first_even, Some(s(4)));
        assert!(t.even_now);
        t.observe(s(5), &[Some(1), Some(1), Some(3)], &[1, 2, 3]);
        assert_eq!(t.first_even, Some(s(4)));
        assert!(!t.even_now);
        assert!(t.summary().contains("leaders even after 4.0s"));
    }
}
