//! Heavy WAF inspections (a form of thousands of fields, a large JSON
//! document) run off the proxy's I/O threads, so that one such request
//! never stalls the cached pages and small requests those threads serve.
//!
//! At most `inspection threads` heavy inspections run at once (one less
//! than the cores, at least one), and one per client (its IPv4 address or
//! IPv6 /64): a client that sends many waits for its own, and cannot take
//! every inspection thread. Waiting is asynchronous: no thread is held.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The inspection threads and each client's turn; created once at start-up.
pub struct Offload {
    threads: Semaphore,
    clients: DashMap<String, Arc<Semaphore>>,
}

impl Default for Offload {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Offload {
            threads: Semaphore::new(cores.saturating_sub(1).max(1)),
            clients: DashMap::new(),
        }
    }
}

impl Offload {
    /// Runs `work` on a blocking thread, within the limits above.
    pub async fn run<R: Send + 'static>(
        &self,
        client: IpAddr,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        let key = crate::util::net::subscriber_key(client);
        let mine = self
            .clients
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let result = {
            let _client_turn = mine.acquire().await;
            let _thread = self.threads.acquire().await;
            tokio::task::spawn_blocking(work).await
        };
        // The client's entry goes once nobody else waits on it.
        self.clients
            .remove_if(&key, |_, s| Arc::strong_count(s) <= 2);
        match result {
            Ok(r) => r,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Cancelled: the runtime is shutting down.
                Err(e) => std::panic::resume_unwind(Box::new(e.to_string())),
            },
        }
    }
}
