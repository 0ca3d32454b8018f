//! The shop page cache: the `cache` block, the rules (what, which key, how
//! long), the in-memory store behind pingora-cache, and the filter that
//! wires them into pingora's cache phases. The admin API purges the store.

pub mod rules;
pub mod section;
pub mod store;

pub use rules::{BypassReason, CacheRules, KeyParts};
pub use section::{CacheSection, CacheSettings};
pub use store::{PageStore, Purge};

use crate::filter::{CacheStatus, Decider, Filter, RequestState};
use crate::observe::metrics;
use pingora::cache::key::HashBinary;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::Session;

/// The store and its fill lock, as pingora needs them: `'static`, created
/// once at start-up when the policy has a cache then, never rebuilt by
/// reloads (reloads change rules, not the store).
#[derive(Clone, Copy)]
pub struct Store {
    pub pages: &'static PageStore,
    lock: &'static CacheKeyLockImpl,
}

impl Store {
    /// The process's store, sized by the start-up policy.
    pub fn new(settings: &CacheSettings) -> Self {
        let pages: &'static PageStore = Box::leak(Box::new(PageStore::new(
            settings.max_size,
            settings.max_object_size,
        )));
        pages.set_tag_header(settings.rules.tag_header.clone());
        let lock: &'static CacheKeyLockImpl =
            Box::leak(CacheLock::new_boxed(settings.rules.lock_timeout));
        Store { pages, lock }
    }
}

/// The page cache in the request's phases.
pub struct PageCache {
    store: Option<Store>,
}

impl PageCache {
    /// `store` is `None` when the cache was off at start-up.
    pub fn new(store: Option<Store>) -> Self {
        PageCache { store }
    }
}

fn settings(st: &RequestState) -> Option<&CacheSettings> {
    st.policy.get::<CacheSection>()
}

/// The `x-cache` value for a cache phase.
fn status_of(phase: CachePhase) -> CacheStatus {
    match phase {
        CachePhase::Hit => CacheStatus::Hit,
        CachePhase::Miss => CacheStatus::Miss,
        CachePhase::Stale | CachePhase::StaleUpdating => CacheStatus::Stale,
        CachePhase::Expired => CacheStatus::Expired,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus::Revalidated,
        _ => CacheStatus::Bypass,
    }
}

#[async_trait::async_trait]
impl Filter for PageCache {
    fn name(&self) -> Decider {
        Decider::Cache
    }

    /// gzip/brotli for clients that accept them, applied after the cache,
    /// so the stored entry stays uncompressed and serves every client.
    fn early(&self, session: &mut Session, st: &mut RequestState) {
        let level = settings(st).map_or(0, |c| c.rules.compression_level);
        if let Some(compression) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            compression.adjust_level(level);
            compression.adjust_decompression(level > 0);
        }
    }

    /// Turns the cache on for this request unless a rule says it is
    /// personal (session cookie, cart/checkout/account path, action
    /// parameter, method).
    fn cache_request(&self, session: &mut Session, st: &mut RequestState) -> pingora::Result<()> {
        let (Some(store), Some(settings)) = (self.store, settings(st)) else {
            return Ok(());
        };
        if let Some(reason) = settings
            .rules
            .request_bypass(session.req_header(), &st.target)
        {
            st.cache.bypass = Some(reason);
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(settings.rules.lock_timeout);
        let max_object_size = settings.max_object_size;
        session
            .cache
            .enable(store.pages, None, None, Some(store.lock), Some(overrides));
        session.cache.set_max_file_size_bytes(max_object_size);
        Ok(())
    }

    /// Host + path + normalised query (+ device class).
    fn cache_key(&self, session: &Session, st: &RequestState) -> Option<CacheKey> {
        let settings = settings(st)?;
        Some(CacheKey::new(
            settings.rules.key(session.req_header()).primary,
            "",
        ))
    }

    /// Whether and how long a response may be stored (the cart-leak guard
    /// lives in the rules).
    fn cache_response(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        st: &mut RequestState,
    ) -> Option<RespCacheable> {
        let settings = settings(st)?;
        let shared = settings.rules.is_shared_asset(&st.target);
        Some(
            match settings
                .rules
                .response_meta_for(session.req_header(), resp, shared)
            {
                Ok(meta) => RespCacheable::Cacheable(meta),
                Err(reason) => {
                    st.cache.bypass = Some(reason);
                    RespCacheable::Uncacheable(NoCacheReason::Custom(reason))
                }
            },
        )
    }

    /// The variance of a response: only the allowed `Vary` headers.
    fn cache_variance(
        &self,
        meta: &CacheMeta,
        req: &RequestHeader,
        st: &RequestState,
    ) -> Option<HashBinary> {
        settings(st)?.rules.variance(meta, req)
    }

    fn upstream_request(
        &self,
        session: &Session,
        st: &RequestState,
        upstream: &mut RequestHeader,
    ) -> pingora::Result<()> {
        if !session.cache.enabled() {
            return Ok(());
        }
        // The origin answers uncompressed, so one stored entry serves every
        // client; Rempart compresses on the way out.
        upstream.remove_header(&http::header::ACCEPT_ENCODING);
        // The parameters the key leaves out (utm_*, fbclid...) are left out
        // of what the origin receives too: the stored page cannot depend on
        // them.
        if let Some(target) = settings(st).and_then(|c| c.rules.forwarded_target(upstream)) {
            upstream.set_raw_path(&target)?;
        }
        Ok(())
    }

    /// `x-cache` on every answer of a cache-enabled policy.
    fn response(
        &self,
        session: &Session,
        st: &mut RequestState,
        response: &mut ResponseHeader,
        own: bool,
    ) -> pingora::Result<()> {
        if own || self.store.is_none() || settings(st).is_none() {
            return Ok(());
        }
        // A bypass decided by a rule wins over pingora's phase.
        let status = match st.cache.bypass {
            Some(_) => CacheStatus::Bypass,
            None => status_of(session.cache.phase()),
        };
        st.cache.status = Some(status);
        response.insert_header("x-cache", status.as_str())?;
        Ok(())
    }

    fn logging(&self, _session: &Session, st: &mut RequestState, _status: u16) {
        match (st.cache.bypass, st.cache.status) {
            (Some(reason), _) => metrics::CACHE_BYPASS.with_label_values(&[reason]).inc(),
            // pingora declined to store (lock timeout, object too large...).
            (None, Some(CacheStatus::Bypass)) => metrics::CACHE_BYPASS
                .with_label_values(&["not_stored"])
                .inc(),
            (None, Some(status)) => metrics::CACHE_LOOKUPS
                .with_label_values(&[&status.as_str().to_ascii_lowercase()])
                .inc(),
            _ => {}
        }
    }
}
