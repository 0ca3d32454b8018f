//! The one list of what makes up Rempart: the policy's sections, in the
//! order they are documented and compiled, and the filter chain, in the
//! order the filters run in every phase (README, "How a request travels").
//!
//! Adding a slice is its own module plus a line here: its section (if it
//! has a block in the policy file) and its filter at its place in the chain.

use super::Parts;
use crate::cache::{CacheSection, PageCache};
use crate::edge::client_ip::ClientIpSection;
use crate::edge::hygiene::{LimitsFilter, LimitsSection, RedirectFilter};
use crate::edge::tls::TlsSection;
use crate::edge::upstream::UpstreamSection;
use crate::filter::Filter;
use crate::observe::alerts::AlertsSection;
use crate::observe::stats::StatsSection;
use crate::policy::server::ServerSection;
use crate::policy::Sections;
use crate::shield::bans::{BanFilter, BansSection};
use crate::shield::bots::{BotFilter, BotsSection, Challenge, ChallengeAnswer};
use crate::shield::ip_filter::{IpFilter, IpFilterSection};
use crate::shield::logins::{BruteForceSection, CardTestingSection, LoginWatch};
use crate::shield::rate_limit::{RateLimitFilter, RateLimitsSection};
use crate::waf::{WafFilter, WafSection};
use std::sync::Arc;

/// The policy's blocks. A section may read the ones before it.
pub fn sections() -> Sections {
    Sections::default()
        .with::<ServerSection>()
        .with::<TlsSection>()
        .with::<LimitsSection>()
        .with::<ClientIpSection>()
        .with::<UpstreamSection>()
        .with::<IpFilterSection>()
        .with::<CacheSection>()
        .with::<StatsSection>()
        .with::<AlertsSection>()
        .with::<BansSection>()
        .with::<RateLimitsSection>()
        .with::<BotsSection>()
        .with::<BruteForceSection>()
        .with::<CardTestingSection>()
        .with::<WafSection>()
}

/// The filter chain, in order. In the phases that may answer, the first
/// filter that answers ends the chain.
pub fn filters(parts: &Parts) -> Vec<Arc<dyn Filter>> {
    vec![
        Arc::new(LimitsFilter),
        Arc::new(RedirectFilter::new(parts.https_port)),
        Arc::new(BanFilter::new(parts.bans.clone())),
        Arc::new(ChallengeAnswer::new(parts.challenge_key.clone())),
        Arc::new(IpFilter),
        Arc::new(RateLimitFilter),
        Arc::new(BotFilter::new(parts.bans.clone())),
        Arc::new(Challenge::new(
            parts.challenge_key.clone(),
            parts.bans.clone(),
        )),
        Arc::new(WafFilter::new()),
        Arc::new(LoginWatch::new(parts.bans.clone())),
        Arc::new(PageCache::new(parts.cache)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::hygiene::LimitsSection;
    use crate::edge::upstream::UpstreamSection;
    use crate::policy::server::ServerSection;
    use crate::policy::{Diagnostics, Overrides, Services, Snapshot};
    use std::io::Write;
    use std::path::Path;

    fn load(path: &Path, overrides: &Overrides) -> Result<Snapshot, Diagnostics> {
        crate::policy::load(path, &sections(), overrides, &Services::default())
    }

    fn load_text(text: &str) -> Result<Snapshot, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        load(&path, &Overrides::default())
    }

    fn lines(d: &Diagnostics) -> Vec<(u32, String)> {
        d.0.iter().map(|d| (d.line, d.message.clone())).collect()
    }

    #[test]
    fn minimal_policy_compiles_with_defaults() {
        let s = load_text("upstream:\n  servers: [\"127.0.0.1:8081\"]\n").unwrap();
        let server = s.get::<ServerSection>().unwrap();
        assert_eq!(server.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(s.get::<LimitsSection>().unwrap().max_header_bytes, 16 << 10);
        let upstream = s.get::<UpstreamSection>().unwrap();
        assert_eq!(upstream.servers[0].addr.to_string(), "127.0.0.1:8081");
        assert!(s
            .get::<crate::shield::ip_filter::IpFilterSection>()
            .is_none());
        assert!(s.get::<crate::waf::WafSection>().is_none());
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "\
server:
  lisen: [\"0.0.0.0:80\"]
upstream:
  servers: [\"127.0.0.1:8081\", \"nope\"]
  timeouts:
    connect: 3
ip_filter:
  deny:
    - 10.0.0.0/8
    - 300.1.1.1
    - 192.168.0.0/40
colour: blue
";
        let d = load_text(text).unwrap_err();
        let got = lines(&d);
        assert_eq!(got.len(), 5, "{d}");
        assert_eq!(got[0].0, 2);
        assert!(got[0].1.contains("unknown key `lisen`"), "{d}");
        assert!(d.0[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("did you mean `listen`"));
        assert_eq!(got[1].0, 6, "{d}");
        assert!(got[1].1.contains("no unit"), "{d}");
        assert_eq!(got[2].0, 10);
        assert_eq!(got[3].0, 11);
        assert_eq!(got[4].0, 12);
        assert!(got[4].1.contains("unknown block `colour`"));
    }

    #[test]
    fn wrong_types_and_bad_addresses() {
        let text = "server:\n  threads: many\nupstream:\n  servers: [\"127.0.0.1:http\"]\n";
        let d = load_text(text).unwrap_err();
        let got = lines(&d);
        assert_eq!(got.len(), 2, "{d}");
        assert_eq!(got[0].0, 2);
        assert_eq!(got[1].0, 4);
        assert!(got[1].1.contains("not a port"), "{d}");
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let d = load_text("server:\n  listen: [\"a\"\nupstream: {\n").unwrap_err();
        assert_eq!(d.len(), 1);
        assert!(d.0[0].line >= 2, "{d}");
    }

    #[test]
    fn includes_are_merged_and_loops_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.yaml"),
            "include: [\"lists.yaml\"]\nupstream:\n  servers: [\"127.0.0.1:1\"]\nip_filter:\n  deny: [\"10.0.0.0/8\"]\n").unwrap();
        std::fs::write(
            dir.path().join("lists.yaml"),
            "ip_filter:\n  deny:\n    - 192.0.2.0/24\n    - bogus\n",
        )
        .unwrap();
        let d = load(&dir.path().join("main.yaml"), &Overrides::default()).unwrap_err();
        assert_eq!(d.len(), 1, "{d}");
        assert!(d.0[0].file.ends_with("lists.yaml"));
        assert_eq!(d.0[0].line, 4);

        std::fs::write(dir.path().join("lists.yaml"), "include: [\"main.yaml\"]\n").unwrap();
        let d = load(&dir.path().join("main.yaml"), &Overrides::default()).unwrap_err();
        assert!(d.to_string().contains("loop"), "{d}");
    }

    #[test]
    fn overrides_replace_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, "upstream:\n  servers: [\"127.0.0.1:1\"]\n").unwrap();
        let o = Overrides {
            listen: vec!["127.0.0.1:7000".into()],
            admin_listen: Some("127.0.0.1:7001".into()),
            upstreams: vec!["127.0.0.1:7002".into()],
        };
        let s = load(&path, &o).unwrap();
        let server = s.get::<ServerSection>().unwrap();
        assert_eq!(server.listen[0].port(), 7000);
        assert_eq!(server.admin_listen.port(), 7001);
        assert_eq!(
            s.get::<UpstreamSection>().unwrap().servers[0].addr.port(),
            7002
        );
        let bad = Overrides {
            upstreams: vec!["x".into()],
            ..Default::default()
        };
        assert!(load(&path, &bad)
            .unwrap_err()
            .to_string()
            .contains("--upstream"));
    }
}
