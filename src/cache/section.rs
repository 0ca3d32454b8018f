//! The `cache` block: what may be cached, under which key, for how long,
//! and how much memory the store may take.

use super::rules::{self, CacheRules};
use crate::policy::units::{ByteSize, Dur, NonZeroDur};
use crate::policy::{Compiler, Section};
use crate::util::pattern::{NamePattern, PathMatch};
use http::HeaderName;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::sync::Arc;
use std::time::Duration;

/// The `cache` block.
pub struct CacheSection;

/// The page cache: its rules (reloadable) and its size (fixed at start-up).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub rules: Arc<CacheRules>,
    pub max_size: u64,
    pub max_object_size: usize,
}

impl Section for CacheSection {
    const KEY: &'static str = "cache";
    type Raw = CacheBlock;
    type Compiled = CacheSettings;

    /// `None` when absent or `enabled: false`.
    fn compile(raw: Option<CacheBlock>, c: &mut Compiler<'_>) -> Option<CacheSettings> {
        compile_cache(c, raw?)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheBlock {
    pub enabled: Option<bool>,
    pub max_size: Option<Spanned<ByteSize>>,
    pub max_object_size: Option<Spanned<ByteSize>>,
    pub default_ttl: Option<Dur>,
    pub statuses: Option<Vec<Spanned<u16>>>,
    pub status_ttl: std::collections::BTreeMap<u16, Dur>,
    pub ttl_overrides: Vec<TtlOverrideBlock>,
    pub stale_while_revalidate: Option<Dur>,
    pub stale_if_error: Option<Dur>,
    pub lock_timeout: Option<NonZeroDur>,
    pub bypass: BypassBlock,
    pub key: CacheKeyBlock,
    pub vary_allow: Vec<Spanned<String>>,
    pub tag_header: Option<Spanned<String>>,
    pub compression_level: Option<Spanned<u32>>,
    pub shared_assets: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlOverrideBlock {
    /// A path prefix (`/wp-content/uploads/`) or, with `~`, a regex (`~\\.css$`).
    pub path: Spanned<String>,
    pub ttl: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BypassBlock {
    pub cookies: Option<Vec<Spanned<String>>>,
    pub paths: Option<Vec<Spanned<String>>>,
    pub query_params: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheKeyBlock {
    pub drop_query_params: Option<Vec<Spanned<String>>>,
    pub device_class: bool,
}

/// The `cache` block: `None` when absent or `enabled: false`.
fn compile_cache(c: &mut Compiler<'_>, b: CacheBlock) -> Option<CacheSettings> {
    if b.enabled == Some(false) {
        return None;
    }
    let names = |c: &mut Compiler<'_>,
                 list: &Option<Vec<Spanned<String>>>,
                 defaults: &[&str]|
     -> Vec<NamePattern> {
        match list {
            Some(list) => list
                .iter()
                .filter_map(|s| match NamePattern::parse(&s.value) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        c.error(
                            s,
                            e,
                            Some("a name, with `*` for any characters: `wordpress_logged_in_*`"),
                        );
                        None
                    }
                })
                .collect(),
            None => defaults
                .iter()
                .filter_map(|d| NamePattern::parse(d).ok())
                .collect(),
        }
    };
    let paths = |c: &mut Compiler<'_>, list: &[Spanned<String>]| -> Vec<PathMatch> {
        list.iter()
            .filter_map(|s| match PathMatch::parse(&s.value) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.error(
                        s,
                        e,
                        Some("a prefix such as `/cart` or a regex such as `~^/admin[0-9a-z]*/`"),
                    );
                    None
                }
            })
            .collect()
    };
    let bypass_paths = match &b.bypass.paths {
        Some(list) => paths(c, list),
        None => rules::DEFAULT_BYPASS_PATHS
            .iter()
            .filter_map(|p| PathMatch::parse(p).ok())
            .collect(),
    };
    let shared_assets = paths(c, &b.shared_assets);
    let mut ttl_overrides = Vec::new();
    for o in &b.ttl_overrides {
        if let Some(m) = paths(c, std::slice::from_ref(&o.path)).pop() {
            ttl_overrides.push((m, o.ttl.0));
        }
    }
    let statuses: Vec<u16> = match &b.statuses {
        Some(list) => list
            .iter()
            .filter_map(|s| {
                if (200..600).contains(&s.value) {
                    Some(s.value)
                } else {
                    c.error(
                        s,
                        format!("`{}` is not a cacheable HTTP status", s.value),
                        Some("e.g. 200, 301, 404"),
                    );
                    None
                }
            })
            .collect(),
        None => vec![200, 301, 404],
    };
    let mut status_ttl: std::collections::BTreeMap<u16, Duration> =
        b.status_ttl.iter().map(|(k, v)| (*k, v.0)).collect();
    if b.statuses.is_none() {
        status_ttl.entry(404).or_insert(Duration::from_secs(60));
    }
    let header = |c: &mut Compiler<'_>, s: &Spanned<String>| match HeaderName::try_from(
        s.value.to_ascii_lowercase(),
    ) {
        Ok(h) => Some(h),
        Err(_) => {
            c.error(s, format!("`{}` is not a header name", s.value), None);
            None
        }
    };
    let vary_allow = b.vary_allow.iter().filter_map(|s| header(c, s)).collect();
    let tag_header = b
        .tag_header
        .as_ref()
        .and_then(|s| header(c, s))
        .unwrap_or(HeaderName::from_static("x-cache-tags"));
    let compression_level = match &b.compression_level {
        // gzip (zlib-ng) takes levels 0-9; one level is used for every algorithm.
        Some(l) if l.value > 9 => {
            c.error(
                l,
                "`cache.compression_level` must be between 0 (off) and 9",
                Some("5 is a good balance for HTML"),
            );
            5
        }
        Some(l) => l.value,
        None => 5,
    };
    let max_size = b.max_size.as_ref().map_or(256 << 20, |s| s.value.0);
    if max_size < 1 << 20 {
        c.at(
            b.max_size.as_ref(),
            "`cache.max_size` must be at least 1MiB",
            Some("e.g. `512MiB`"),
        );
    }
    let max_object_size = b.max_object_size.as_ref().map_or(8 << 20, |s| {
        usize::try_from(s.value.0).unwrap_or(usize::MAX)
    });
    if max_object_size as u64 > max_size {
        c.at(
            b.max_object_size.as_ref(),
            "`cache.max_object_size` is larger than `cache.max_size`",
            None,
        );
    }
    let rules = CacheRules {
        default_ttl: b.default_ttl.map_or(Duration::from_secs(600), |d| d.0),
        statuses,
        status_ttl,
        ttl_overrides,
        stale_while_revalidate: b
            .stale_while_revalidate
            .map_or(Duration::from_secs(30), |d| d.0),
        stale_if_error: b
            .stale_if_error
            .map_or(Duration::from_secs(86_400), |d| d.0),
        lock_timeout: b.lock_timeout.map_or(Duration::from_secs(5), |d| d.0),
        bypass_cookies: names(c, &b.bypass.cookies, rules::DEFAULT_BYPASS_COOKIES),
        bypass_paths,
        shared_assets,
        bypass_query_params: names(
            c,
            &b.bypass.query_params,
            rules::DEFAULT_BYPASS_QUERY_PARAMS,
        ),
        drop_query_params: names(
            c,
            &b.key.drop_query_params,
            rules::DEFAULT_DROP_QUERY_PARAMS,
        ),
        device_class: b.key.device_class,
        vary_allow,
        tag_header,
        compression_level,
    };
    Some(CacheSettings {
        rules: Arc::new(rules),
        max_size,
        max_object_size,
    })
}
