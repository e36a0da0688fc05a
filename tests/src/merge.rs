//! Waiting for region merges in the in-process [`Cluster`].

use std::time::Duration;

use proto::metapb;

use crate::Cluster;

impl Cluster {
    /// Waits until no running store hosts `source` and every running replica of `target_id`
    /// has the same region, covering the source's range; routes by it from then on.
    pub fn wait_merged(
        &self,
        source: &metapb::Region,
        target_id: u64,
        timeout: Duration,
    ) -> metapb::Region {
        let mut merged = None;
        crate::wait_until(
            &format!("region {} merged into {target_id}", source.id),
            timeout,
            || {
                if self.is_hosted(source.id) {
                    return false;
                }
                let regions: Vec<_> = self
                    .store_ids()
                    .iter()
                    .filter(|s| self.is_running(**s))
                    .filter_map(|s| self.peer_status(*s, target_id))
                    .map(|st| st.region)
                    .collect();
                let covers = |r: &metapb::Region| {
                    r.start_key <= source.start_key
                        && (r.end_key.is_empty()
                            || (!source.end_key.is_empty() && r.end_key >= source.end_key))
                };
                let running = self
                    .store_ids()
                    .iter()
                    .filter(|s| self.is_running(**s))
                    .count();
                if regions.len() == running && regions.iter().all(|r| covers(r) && *r == regions[0])
                {
                    merged = Some(regions[0].clone());
                    return true;
                }
                false
            },
        );
        let merged = merged.expect("found");
        self.forget_route(source.id);
        self.update_route(std::slice::from_ref(&merged));
        merged
    }
}
