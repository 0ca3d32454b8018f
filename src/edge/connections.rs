//! Guards on the shop's connections, before any request is read:
//!
//! - **a per-client cap** on open connections (`limits.max_connections_per_ip`;
//!   an IPv4 address or an IPv6 /64; trusted proxies are not capped): past
//!   it, an HTTP/1 connection gets a 429 and is closed;
//! - **a deadline on request heads** (`limits.header_timeout`): from the
//!   first byte of a head to its end. A head trickled a line at a time
//!   (slowloris) is answered 408 and closed once it passes; idle keep-alive
//!   time before the first byte is pingora's keep-alive timeout.
//!
//! The proxy tells a connection's deadline where a request starts and ends
//! ([`head_read`], [`request_done`]) through the stream it reads from.

use super::client_ip::ClientIpSection;
use super::hygiene::LimitsSection;
use crate::policy::store::PolicyStore;
use async_trait::async_trait;
use dashmap::DashMap;
use pingora::apps::ServerApp;
use pingora::protocols::l4::socket::SocketAddr as L4Addr;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The shop's listeners' application: the proxy, behind the guards.
pub struct Guarded<A> {
    pub inner: Arc<A>,
    pub policy: Arc<PolicyStore>,
    open: DashMap<String, u32>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, policy: Arc<PolicyStore>) -> Self {
        Guarded {
            inner: Arc::new(inner),
            policy,
            open: DashMap::new(),
        }
    }
}

/// One open connection of a client, counted while it lives.
struct Slot<'a> {
    open: &'a DashMap<String, u32>,
    key: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = self.open.entry(self.key.clone()) {
            if *e.get() <= 1 {
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }
}

const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 10\r\nx-rempart-reason: too_many_connections\r\nconnection: close\r\ncontent-length: 40\r\n\r\nToo many connections from your address.\n";

const TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nx-rempart-reason: header_timeout\r\nconnection: close\r\ncontent-length: 43\r\n\r\nThe request headers took too long to come.\n";

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let snapshot = self.policy.current();
        let limits = snapshot.get::<LimitsSection>().copied().unwrap_or_default();
        let trusted = |ip: &IpAddr| {
            snapshot
                .get::<ClientIpSection>()
                .is_some_and(|c| c.is_trusted(*ip))
        };
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned())
            .and_then(|a| match a {
                L4Addr::Inet(i) => Some(crate::util::net::canonical(i.ip())),
                _ => None,
            });
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let mut _slot = None;
        if let Some(ip) = peer.filter(|ip| !trusted(ip)) {
            let key = crate::util::net::subscriber_key(ip);
            let cap = u32::try_from(limits.max_connections_per_ip).unwrap_or(u32::MAX);
            let admitted = {
                let mut n = self.open.entry(key.clone()).or_insert(0);
                if *n < cap {
                    *n += 1;
                    true
                } else {
                    false
                }
            };
            if !admitted {
                crate::observe::metrics::CONNECTIONS_REFUSED
                    .with_label_values(&["per_address_cap"])
                    .inc();
                tracing::debug!(client = %key, cap, "connection refused: too many open from this client");
                if !h2 {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), stream.write_all(TOO_MANY))
                            .await;
                }
                Shutdown::shutdown(&mut *stream).await;
                return None;
            }
            _slot = Some(Slot {
                open: &self.open,
                key,
            });
        }
        let stream: Stream = if h2 {
            stream
        } else {
            Box::new(HeadDeadline::new(stream, limits.header_timeout))
        };
        drop(snapshot);
        ServerApp::process_new(&self.inner, stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Where a connection is: between requests (or reading a head), or inside one.
#[derive(Debug, Default)]
pub struct HeadState {
    in_request: AtomicBool,
    /// Bumped at every request's end: a deadline armed for an earlier head is void.
    generation: AtomicU64,
}

/// A stream whose request heads must arrive within a deadline.
pub struct HeadDeadline {
    inner: Stream,
    state: Arc<HeadState>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The generation the deadline is armed for.
    armed: Option<u64>,
    /// The deadline passed: the connection reads as closed from then on.
    expired: bool,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HeadDeadline {
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        HeadDeadline {
            inner,
            state: Arc::new(HeadState::default()),
            timeout,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            expired: false,
        }
    }
}

/// The proxy has a whole request head: no deadline until the request ends.
pub fn head_read(stream: Option<&Stream>) {
    if let Some(d) = stream.and_then(|s| s.as_any().downcast_ref::<HeadDeadline>()) {
        d.state.in_request.store(true, Ordering::Relaxed);
    }
}

/// The request is over: the next head's first byte starts a new deadline.
pub fn request_done(stream: Option<&Stream>) {
    if let Some(d) = stream.and_then(|s| s.as_any().downcast_ref::<HeadDeadline>()) {
        d.state.generation.fetch_add(1, Ordering::Relaxed);
        d.state.in_request.store(false, Ordering::Relaxed);
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if me.expired {
            return Poll::Ready(Ok(()));
        }
        let awaiting = !me.state.in_request.load(Ordering::Relaxed);
        let generation = me.state.generation.load(Ordering::Relaxed);
        if !awaiting || me.armed.is_some_and(|g| g != generation) {
            me.armed = None;
        }
        if me.armed.is_some() && me.sleep.is_elapsed() {
            return me.timed_out(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if awaiting && me.armed.is_none() && buf.filled().len() > before {
                    me.sleep.as_mut().reset(Instant::now() + me.timeout);
                    me.armed = Some(generation);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if me.armed.is_some() && me.sleep.as_mut().poll(cx).is_ready() {
                    return me.timed_out(cx);
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl HeadDeadline {
    /// The head took too long: a best-effort 408, then an error that ends
    /// the connection.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        crate::observe::metrics::CONNECTIONS_REFUSED
            .with_label_values(&["header_timeout"])
            .inc();
        let _ = Pin::new(&mut self.inner).poll_write(cx, TIMED_OUT);
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
        self.armed = None;
        self.expired = true;
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request head not complete within limits.header_timeout",
        )))
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
