//! Store addresses, learned from PD and cached, and one gRPC connection per address, cached.
//!
//! Both caches forget an entry when a request through it fails at the transport level (or the
//! store answers `StoreNotMatch`), so that a restarted or moved store is looked up afresh.
//! Connections are lazy: the first request through one connects, within `connect_timeout`.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use pd_client::PdClient;
use proto::metapb::StoreState;
use tonic::transport::Endpoint;

use crate::config::Config;
use crate::error::Error;
use crate::region_cache::StoreId;
use crate::rpc::StoreClient;

/// Why no connection to a store could be had.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// This store cannot be used now (unknown, tombstone, bad address): try another peer.
    Unusable(String),
    /// PD did not answer within the time left.
    PdTimeout,
    /// PD itself failed; the operation fails.
    Fatal(Error),
}

pub(crate) struct Stores {
    addresses: Mutex<HashMap<StoreId, String>>,
    connections: Mutex<HashMap<String, StoreClient>>,
    connect_timeout: Duration,
    max_message_size: usize,
    security: security::SecurityManager,
}

impl Stores {
    pub(crate) fn new(config: &Config) -> Stores {
        Stores {
            addresses: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            connect_timeout: config.connect_timeout,
            max_message_size: config.max_message_size,
            security: config.pd.security.clone(),
        }
    }

    /// The address of `store_id` and a connection to it.
    pub(crate) async fn client(
        &self,
        pd: &PdClient,
        store_id: StoreId,
        pd_timeout: Duration,
    ) -> Result<(String, StoreClient), StoreError> {
        let address = self.address(pd, store_id, pd_timeout).await?;
        let client = self.connection(&address)?;
        Ok((address, client))
    }

    async fn address(
        &self,
        pd: &PdClient,
        store_id: StoreId,
        pd_timeout: Duration,
    ) -> Result<String, StoreError> {
        if let Some(address) = self.addresses.lock().get(&store_id) {
            return Ok(address.clone());
        }
        let store = match tokio::time::timeout(pd_timeout, pd.get_store(store_id)).await {
            Err(_) => return Err(StoreError::PdTimeout),
            Ok(Err(e)) if e.is_retryable() => return Err(StoreError::Fatal(Error::Pd(e))),
            Ok(Err(e)) => {
                return Err(StoreError::Unusable(format!(
                    "store {store_id} unknown to PD: {e}"
                )))
            }
            Ok(Ok(store)) => store,
        };
        if store.state() == StoreState::Tombstone {
            return Err(StoreError::Unusable(format!(
                "store {store_id} is a tombstone"
            )));
        }
        if store.address.is_empty() {
            return Err(StoreError::Unusable(format!(
                "store {store_id} has no address"
            )));
        }
        self.addresses
            .lock()
            .insert(store_id, store.address.clone());
        Ok(store.address)
    }

    fn connection(&self, address: &str) -> Result<StoreClient, StoreError> {
        let mut connections = self.connections.lock();
        if let Some(client) = connections.get(address) {
            return Ok(client.clone());
        }
        let url = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| StoreError::Unusable(format!("bad store address {address:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let client = StoreClient::new(self.security.connect_lazy(endpoint))
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size);
        connections.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// Forgets the address of `store_id` (it is asked from PD again next time).
    pub(crate) fn forget_store(&self, store_id: StoreId) {
        self.addresses.lock().remove(&store_id);
    }

    /// Drops the cached connection to `address`.
    pub(crate) fn drop_connection(&self, address: &str) {
        self.connections.lock().remove(address);
    }
}
