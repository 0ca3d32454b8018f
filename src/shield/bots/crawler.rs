//! Verified crawlers: a client that says it is Googlebot (or Bingbot,
//! Applebot...) is believed only if its address resolves back to the search
//! engine's domain and that name resolves forward to the same address, the
//! method the search engines themselves document. Results are cached; a DNS
//! answer that takes longer than the timeout counts as a failure. A fake
//! crawler is treated as a bad bot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// A search engine's crawler: the user-agent token and its reverse-DNS domains.
#[derive(Debug)]
pub struct Crawler {
    pub name: &'static str,
    pub token: &'static str,
    pub domains: &'static [&'static str],
}

/// The crawlers Rempart knows how to verify.
pub const CRAWLERS: &[Crawler] = &[
    Crawler {
        name: "googlebot",
        token: "googlebot",
        domains: &[".googlebot.com", ".google.com"],
    },
    Crawler {
        name: "google-other",
        token: "google-inspectiontool",
        domains: &[".googlebot.com", ".google.com"],
    },
    Crawler {
        name: "bingbot",
        token: "bingbot",
        domains: &[".search.msn.com"],
    },
    Crawler {
        name: "applebot",
        token: "applebot",
        domains: &[".applebot.apple.com"],
    },
    Crawler {
        name: "yandexbot",
        token: "yandexbot",
        domains: &[".yandex.ru", ".yandex.net", ".yandex.com"],
    },
    Crawler {
        name: "baiduspider",
        token: "baiduspider",
        domains: &[".baidu.com", ".baidu.jp"],
    },
];

/// The crawler a user agent claims to be, if any.
pub fn claimed(user_agent: &str) -> Option<&'static Crawler> {
    let ua = user_agent.to_ascii_lowercase();
    CRAWLERS.iter().find(|c| ua.contains(c.token))
}

/// Where names come from: the system resolver, or fixed records (tests,
/// air-gapped hosts).
#[derive(Debug, Clone)]
pub enum Resolver {
    System,
    Static(HashMap<IpAddr, String>),
}

impl Resolver {
    async fn reverse(&self, ip: IpAddr) -> Option<String> {
        match self {
            Resolver::Static(records) => records.get(&ip).cloned(),
            Resolver::System => {
                tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip).ok())
                    .await
                    .ok()
                    .flatten()
            }
        }
    }

    async fn forward(&self, name: &str) -> Vec<IpAddr> {
        match self {
            Resolver::Static(records) => records
                .iter()
                .filter(|(_, n)| n.eq_ignore_ascii_case(name))
                .map(|(ip, _)| *ip)
                .collect(),
            Resolver::System => match tokio::net::lookup_host((name, 0)).await {
                Ok(addrs) => addrs.map(|a| crate::util::net::canonical(a.ip())).collect(),
                Err(_) => Vec::new(),
            },
        }
    }
}

/// Checks claimed crawlers, with a cache of verdicts.
pub struct Verifier {
    resolver: Resolver,
    timeout: Duration,
    cache: moka::sync::Cache<(IpAddr, &'static str), bool>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("resolver", &self.resolver)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Verifier {
    pub fn new(resolver: Resolver, timeout: Duration, cache_ttl: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(50_000)
            .time_to_live(cache_ttl)
            .build();
        Verifier {
            resolver,
            timeout,
            cache,
        }
    }

    /// Reverse then forward DNS. `Some(true)`: a real crawler; `Some(false)`:
    /// an impostor (no name, a name outside the engine's domains, or a name
    /// that does not point back); `None`: DNS did not answer in time, so
    /// nothing is concluded and nothing is cached.
    pub async fn verify(&self, ip: IpAddr, crawler: &'static Crawler) -> Option<bool> {
        let ip = crate::util::net::canonical(ip);
        if let Some(verdict) = self.cache.get(&(ip, crawler.name)) {
            return Some(verdict);
        }
        let check = async {
            let Some(name) = self.resolver.reverse(ip).await else {
                return false;
            };
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !crawler.domains.iter().any(|d| name.ends_with(d)) {
                return false;
            }
            self.resolver.forward(&name).await.contains(&ip)
        };
        let verdict = tokio::time::timeout(self.timeout, check).await.ok()?;
        self.cache.insert((ip, crawler.name), verdict);
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        let records = HashMap::from([
            (
                "66.249.66.1".parse().unwrap(),
                "crawl-66-249-66-1.googlebot.com".to_string(),
            ),
            (
                "203.0.113.5".parse().unwrap(),
                "crawl-fake.googlebot.com.evil.example".to_string(),
            ),
        ]);
        Verifier::new(
            Resolver::Static(records),
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn real_and_fake_googlebots() {
        let v = verifier();
        let google =
            claimed("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
                .unwrap();
        assert_eq!(
            v.verify("66.249.66.1".parse().unwrap(), google).await,
            Some(true)
        );
        assert_eq!(
            v.verify("203.0.113.5".parse().unwrap(), google).await,
            Some(false),
            "wrong domain"
        );
        assert_eq!(
            v.verify("198.51.100.1".parse().unwrap(), google).await,
            Some(false),
            "no reverse name"
        );
        assert!(claimed("Mozilla/5.0 Firefox/133.0").is_none());
    }
}
