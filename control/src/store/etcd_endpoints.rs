//! etcd's members as the store reaches them: one client per member, requests sent to the member that last
//! answered, and a request that could not even connect sent again to the next member (it never reached etcd,
//! so sending it again cannot apply it twice), as etcd's Go client pins and rotates its endpoint.

use super::{Revision, StoreError};
use etcd_client::{Client, ConnectOptions, Txn, TxnResponse};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The key kube-apiserver's compactors take turns on: whoever moves its version compacts this round.
pub(super) const COMPACT_KEY: &str = "compact_rev_key";

/// The members and which one is in use.
pub(super) struct Endpoints {
    clients: Vec<Client>,
    current: AtomicUsize,
}

/// Whether an error says the request never left this process (no connection could be made).
fn never_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && {
                let message = status.message();
                message.contains("connect error") || message.contains("error trying to connect")
            }
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// The store's error for an etcd error: a timeout is 504's, anything else 503's.
fn unavailable(error: etcd_client::Error) -> StoreError {
    match &error {
        etcd_client::Error::GRpcStatus(status)
            if status.code() == tonic::Code::DeadlineExceeded
                || status.message().contains("Timeout expired") =>
        {
            StoreError::Timeout(format!("etcd: {}", status.message()))
        }
        etcd_client::Error::GRpcStatus(status) => {
            StoreError::Unavailable(format!("etcd: {}", status.message()))
        }
        _ => StoreError::Unavailable(format!("etcd: {error}")),
    }
}

impl Endpoints {
    /// A client for each of `urls` (connections are made when first used).
    pub(super) async fn new(urls: &[String], options: ConnectOptions) -> Result<Self, StoreError> {
        if urls.is_empty() {
            return Err(StoreError::Unavailable("no etcd servers given".into()));
        }
        let mut clients = Vec::with_capacity(urls.len());
        for url in urls {
            let client = Client::connect([url], Some(options.clone()))
                .await
                .map_err(|e| StoreError::Unavailable(format!("etcd server {url}: {e}")))?;
            clients.push(client);
        }
        Ok(Self {
            clients,
            current: AtomicUsize::new(0),
        })
    }

    /// Runs `request` on the member in use; one it cannot connect to is passed over for the next, each
    /// member tried once.
    pub(super) async fn call<T, F, Fut>(&self, request: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let first = self.current.load(Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..self.clients.len() {
            let index = (first + offset) % self.clients.len();
            match request(self.clients[index].clone()).await {
                Ok(answer) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(error) if never_sent(&error) => last_error = Some(error),
                Err(error) => return Err(unavailable(error)),
            }
        }
        Err(last_error.map_or_else(
            || StoreError::Unavailable("no etcd servers given".into()),
            unavailable,
        ))
    }

    /// Runs one transaction.
    pub(super) async fn transact(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.call(|client| {
            let txn = txn.clone();
            async move { client.kv_client().txn(txn).await }
        })
        .await
    }

    /// Compacts etcd's history at `revision`.
    pub(super) async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call(|client| async move { client.kv_client().compact(revision as i64, None).await })
            .await
            .map(drop)
    }

    /// etcd's current revision (a linearizable read of one key's count).
    pub(super) async fn current_revision(&self) -> Result<Revision, StoreError> {
        let answer = self
            .call(|client| async move {
                let options = etcd_client::GetOptions::new().with_count_only();
                client.kv_client().get(COMPACT_KEY, Some(options)).await
            })
            .await?;
        Ok(answer
            .header()
            .map_or(0, |h| h.revision().max(0) as Revision))
    }
}
