//! The page store: a pingora-cache `Storage` on a moka cache bounded in bytes.
//!
//! Created once at start-up and never rebuilt (reloads change rules, not the
//! store). moka gives a byte bound through its weigher and TinyLFU admission,
//! so a burst of one-off URLs (crawlers, `?random` cache busters) does not push
//! out the pages that sell. Entries are immutable `Arc`s: a hit never copies
//! the body, it hands out cheap `Bytes` clones.

use crate::observe::metrics;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::{CacheHashKey, CacheKey, CompactCacheKey};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::Arc;

/// One stored response.
#[derive(Debug)]
struct Entry {
    /// Serialized `CacheMeta` (internal, header).
    meta: (Vec<u8>, Vec<u8>),
    body: Bytes,
    /// Normalised `host/path?query`, for purges by URL and prefix.
    url: Box<str>,
    /// Surrogate keys from the origin's tag header, for purges by tag.
    tags: Box<[Box<str>]>,
}

impl Entry {
    fn weight(&self) -> u32 {
        let bytes = self.body.len()
            + self.meta.0.len()
            + self.meta.1.len()
            + self.url.len()
            + self.tags.iter().map(|t| t.len()).sum::<usize>()
            + 128;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// What a purge should remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One normalised URL (`host/path?query`), every variant of it.
    Url(String),
    /// Every URL that starts with this normalised prefix.
    Prefix(String),
    /// Every response that carried this surrogate key.
    Tag(String),
    /// Everything.
    All,
}

/// The in-memory page store.
pub struct PageStore {
    entries: moka::sync::Cache<String, Arc<Entry>>,
    max_object_size: usize,
    tag_header: arc_swap::ArcSwap<http::HeaderName>,
}

impl PageStore {
    /// A store that holds at most `max_bytes` (bodies, headers and keys).
    pub fn new(max_bytes: u64, max_object_size: usize) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &String, entry: &Arc<Entry>| entry.weight())
            .eviction_listener(|_key, _entry, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    metrics::CACHE_EVICTIONS.inc();
                }
            })
            .build();
        PageStore {
            entries,
            max_object_size,
            tag_header: arc_swap::ArcSwap::from_pointee(http::HeaderName::from_static(
                "x-cache-tags",
            )),
        }
    }

    /// Objects larger than this are streamed through, never stored.
    pub fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    /// The origin response header that lists surrogate keys (set from the policy).
    pub fn set_tag_header(&self, name: http::HeaderName) {
        self.tag_header.store(Arc::new(name));
    }

    /// Removes what `purge` names; returns how many entries went.
    pub fn purge(&self, purge: &Purge) -> usize {
        let matches = |e: &Entry| match purge {
            Purge::Url(url) => *e.url == **url,
            Purge::Prefix(prefix) => e.url.starts_with(prefix.as_str()),
            Purge::Tag(tag) => e.tags.iter().any(|t| **t == **tag),
            Purge::All => true,
        };
        let doomed: Vec<Arc<String>> = self
            .entries
            .iter()
            .filter(|(_, e)| matches(e))
            .map(|(k, _)| k)
            .collect();
        for key in &doomed {
            self.entries.invalidate(key.as_str());
        }
        self.entries.run_pending_tasks();
        doomed.len()
    }

    /// Entries and bytes held now (for metrics and the admin API).
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    fn tags_of(&self, meta: &CacheMeta) -> Box<[Box<str>]> {
        let header = self.tag_header.load();
        meta.headers()
            .get_all(header.as_ref())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([',', ' ']))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Box::from)
            .collect()
    }
}

fn store_key(key: &impl CacheHashKey) -> String {
    key.combined()
}

/// A hit: the whole body, or a range of it.
struct Hit {
    entry: Arc<Entry>,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.entry.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _: &'static (dyn Storage + Sync),
        _: &CacheKey,
        _: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.entry.body.len();
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} >= body length {len}"),
            );
        }
        self.start = start;
        self.end = end.map_or(len, |e| e.min(len));
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill in progress: the body is gathered, then stored whole at `finish`.
struct Fill {
    store: &'static PageStore,
    key: String,
    meta: (Vec<u8>, Vec<u8>),
    url: Box<str>,
    tags: Box<[Box<str>]>,
    body: Vec<u8>,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > self.store.max_object_size {
            // pingora stops filling on this error and keeps streaming to the client.
            return Error::e_explain(
                ErrorType::InternalError,
                "response larger than cache.max_object_size",
            );
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let size = self.body.len();
        let entry = Arc::new(Entry {
            meta: self.meta,
            body: Bytes::from(self.body),
            url: self.url,
            tags: self.tags,
        });
        self.store.entries.insert(self.key, entry);
        Ok(MissFinishType::Created(size))
    }
}

#[async_trait]
impl Storage for PageStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(entry) = self.entries.get(&store_key(key)) else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
        let end = entry.body.len();
        Ok(Some((
            meta,
            Box::new(Hit {
                entry,
                start: 0,
                end,
                done: false,
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Fill {
            store: self,
            key: store_key(key),
            meta: meta.serialize()?,
            // The primary key is the URL, plus `#device` when the key has a device class.
            url: Box::from(
                key.primary_key_str()
                    .unwrap_or_default()
                    .split('#')
                    .next()
                    .unwrap_or_default(),
            ),
            tags: self.tags_of(meta),
            body: Vec::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _: PurgeType,
        _: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key: &CompactCacheKey = target.key();
        Ok(match self.entries.remove(&store_key(key)) {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _: &SpanHandle,
    ) -> Result<bool> {
        let k = store_key(key);
        let Some(old) = self.entries.get(&k) else {
            return Ok(false);
        };
        let entry = Arc::new(Entry {
            meta: meta.serialize()?,
            body: old.body.clone(),
            url: old.url.clone(),
            tags: self.tags_of(meta),
        });
        self.entries.insert(k, entry);
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::trace::Span;
    use pingora::http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn leak(store: PageStore) -> &'static PageStore {
        Box::leak(Box::new(store))
    }

    async fn fill(store: &'static PageStore, url: &str, tags: &str, body: &[u8]) {
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.insert_header("x-cache-tags", tags).unwrap();
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, head);
        let key = CacheKey::new(url, "");
        let span = Span::inactive().handle();
        let mut miss = store.get_miss_handler(&key, &meta, &span).await.unwrap();
        miss.write_body(Bytes::copy_from_slice(body), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    async fn body(store: &'static PageStore, url: &str) -> Option<Bytes> {
        let span = Span::inactive().handle();
        let (_, mut hit) = store
            .lookup(&CacheKey::new(url, ""), &span)
            .await
            .unwrap()?;
        hit.read_body().await.unwrap()
    }

    #[tokio::test]
    async fn stores_hits_and_purges_by_url_prefix_tag_and_all() {
        let store = leak(PageStore::new(1 << 20, 1 << 16));
        fill(store, "shop/a?x=1", "product-1 cat-2", b"A").await;
        fill(store, "shop/a?x=1#mobile", "product-1", b"A-mobile").await;
        fill(store, "shop/b", "cat-2", b"B").await;
        fill(store, "shop/c", "", b"C").await;
        assert_eq!(body(store, "shop/a?x=1").await.unwrap(), "A");
        assert_eq!(store.usage().0, 4);

        assert_eq!(
            store.purge(&Purge::Url("shop/a?x=1".into())),
            2,
            "both device variants go"
        );
        assert!(body(store, "shop/a?x=1").await.is_none());
        assert_eq!(store.purge(&Purge::Tag("cat-2".into())), 1);
        assert!(body(store, "shop/b").await.is_none());
        assert_eq!(store.purge(&Purge::Prefix("shop/".into())), 1);
        fill(store, "shop/d", "", b"D").await;
        assert_eq!(store.purge(&Purge::All), 1);
        assert_eq!(store.usage(), (0, 0));
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound() {
        let store = leak(PageStore::new(64 << 10, 8 << 10));
        for i in 0..100 {
            fill(store, &format!("shop/p{i}"), "", &[b'x'; 4000]).await;
        }
        let (entries, bytes) = store.usage();
        assert!(bytes <= 64 << 10, "{bytes} bytes held");
        assert!(entries > 0 && entries < 100, "{entries} entries");
    }

    #[tokio::test]
    async fn refuses_objects_over_the_size_limit() {
        let store = leak(PageStore::new(1 << 20, 10));
        let now = SystemTime::now();
        let meta = CacheMeta::new(now, now, 0, 0, ResponseHeader::build(200, None).unwrap());
        let span = Span::inactive().handle();
        let mut miss = store
            .get_miss_handler(&CacheKey::new("k", ""), &meta, &span)
            .await
            .unwrap();
        assert!(miss
            .write_body(Bytes::from_static(b"01234567890"), true)
            .await
            .is_err());
    }
}
