//! The proof-of-work challenge: an interstitial page, served by Rempart, that a
//! real browser solves in a second with JavaScript (SHA-256 until the hash has
//! `difficulty` leading zero bits), and that costs a bot farm real CPU per
//! client. Success sets a signed, expiring pass cookie bound to the client's
//! network (/24 or /64) and user agent, so it cannot be shared or replayed
//! from elsewhere. Clients without JavaScript get a page that says what to do.
//!
//! Seeds and passes are HMAC-SHA256 signed with a secret from the environment
//! (`REMPART_CHALLENGE_SECRET`), so any Rempart instance sharing the secret
//! accepts them and nothing is stored server-side.

use crate::util::time::now_secs;
use ring::{digest, hmac, rand::SecureRandom};
use std::net::IpAddr;
use std::time::Duration;

/// The pass cookie's name.
pub const COOKIE: &str = "rempart_pass";
/// Where the browser posts its solution (answered by Rempart, never the origin).
pub const VERIFY_PATH: &str = "/.rempart/challenge";
/// How long a seed may take to be solved.
const SEED_TTL: Duration = Duration::from_secs(300);

/// Why a solution or pass was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChallengeError {
    #[error("malformed")]
    Malformed,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("issued to another network or browser")]
    Binding,
    #[error("not enough work")]
    Work,
    #[error("already used")]
    Replayed,
    #[error("the system's random source failed")]
    Random,
}

/// The signing key, and the seeds already exchanged for a pass (one
/// solution buys one pass). Created once at start-up.
pub struct ChallengeKey {
    key: hmac::Key,
    used: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// The client's network and browser, as a short digest (what passes are bound to).
pub fn binding(ip: IpAddr, user_agent: &str) -> String {
    let prefix = match crate::util::net::canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
        }
    };
    let d = digest::digest(&digest::SHA256, format!("{prefix}|{user_agent}").as_bytes());
    hex(&d.as_ref()[..12])
}

/// Leading zero bits of a SHA-256 digest.
fn zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for b in hash {
        if *b == 0 {
            bits += 8;
        } else {
            bits += b.leading_zeros();
            break;
        }
    }
    bits
}

impl ChallengeKey {
    /// A key from the secret; empty secrets are refused by the caller.
    pub fn new(secret: &[u8]) -> Self {
        ChallengeKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            used: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(SEED_TTL)
                .build(),
        }
    }

    /// A random key (passes die with the process): used when no secret is
    /// set. Refused, never weak, when the system's random source fails.
    pub fn random() -> Result<Self, ChallengeError> {
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| ChallengeError::Random)?;
        Ok(Self::new(&secret))
    }

    fn sign(&self, payload: &str) -> String {
        hex(&hmac::sign(&self.key, payload.as_bytes()).as_ref()[..16])
    }

    fn signed(&self, payload: String) -> String {
        let sig = self.sign(&payload);
        format!("{payload}.{sig}")
    }

    fn open<'a>(&self, token: &'a str) -> Result<&'a str, ChallengeError> {
        let (payload, sig) = token.rsplit_once('.').ok_or(ChallengeError::Malformed)?;
        // Constant-time comparison through ring's verify of the full tag would
        // need the untruncated tag; compare the truncated hex in constant time.
        let expected = self.sign(payload);
        let same = expected.len() == sig.len()
            && expected
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(payload)
        } else {
            Err(ChallengeError::Signature)
        }
    }

    /// A fresh seed for a client: `expiry:binding:random.signature`.
    pub fn seed(&self, binding: &str) -> Result<String, ChallengeError> {
        let mut random = [0u8; 12];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| ChallengeError::Random)?;
        Ok(self.signed(format!(
            "{}:{binding}:{}",
            now_secs() + SEED_TTL.as_secs(),
            hex(&random)
        )))
    }

    /// Checks a solution; on success returns the pass cookie value.
    pub fn verify(
        &self,
        seed: &str,
        nonce: &str,
        binding: &str,
        difficulty: u32,
        pass_ttl: Duration,
    ) -> Result<String, ChallengeError> {
        let payload = self.open(seed)?;
        let mut parts = payload.split(':');
        let expiry: u64 = parts
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or(ChallengeError::Malformed)?;
        let bound = parts.next().ok_or(ChallengeError::Malformed)?;
        if expiry < now_secs() {
            return Err(ChallengeError::Expired);
        }
        if bound != binding {
            return Err(ChallengeError::Binding);
        }
        if nonce.is_empty() || nonce.len() > 32 || !nonce.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChallengeError::Malformed);
        }
        let hash = digest::digest(&digest::SHA256, format!("{seed}{nonce}").as_bytes());
        if zero_bits(hash.as_ref()) < difficulty {
            return Err(ChallengeError::Work);
        }
        if self.used.contains_key(seed) {
            return Err(ChallengeError::Replayed);
        }
        self.used.insert(seed.to_string(), ());
        Ok(self.signed(format!("{}:{binding}", now_secs() + pass_ttl.as_secs())))
    }

    /// Whether a pass cookie is valid for this client now.
    pub fn check_pass(&self, pass: &str, binding: &str) -> Result<(), ChallengeError> {
        let payload = self.open(pass)?;
        let (expiry, bound) = payload.split_once(':').ok_or(ChallengeError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| ChallengeError::Malformed)?;
        if expiry < now_secs() {
            return Err(ChallengeError::Expired);
        }
        if bound != binding {
            return Err(ChallengeError::Binding);
        }
        Ok(())
    }
}

/// Solves a seed (what the page's JavaScript does); for tests and tools.
pub fn solve(seed: &str, difficulty: u32) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|n| {
            zero_bits(digest::digest(&digest::SHA256, format!("{seed}{n}").as_bytes()).as_ref())
                >= difficulty
        })
        .unwrap_or_default()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The interstitial page. `return_to` is a same-site path (already checked).
pub fn page(seed: &str, difficulty: u32, return_to: &str, request_id: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>One moment…</title>
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.3rem}}.bar{{height:4px;background:#e5e7eb;border-radius:2px;overflow:hidden}}.bar div{{height:4px;width:30%;background:#2563eb;animation:s 1s infinite linear}}@keyframes s{{from{{margin-left:-30%}}to{{margin-left:100%}}}}code{{background:#f3f3f3;padding:.1rem .3rem}}</style></head>
<body><h1>Checking your browser…</h1>
<p id="status">This takes a second and protects the shop from bots. You will be taken to the page automatically.</p>
<div class="bar"><div></div></div>
<noscript><p><strong>JavaScript is needed for this check.</strong> Please enable JavaScript for this site and reload the page, or contact the shop if you cannot. Reference: <code>{id}</code></p></noscript>
<form id="f" method="post" action="{verify}"><input type="hidden" name="seed" value="{seed}"><input type="hidden" name="nonce" id="nonce" value=""><input type="hidden" name="return_to" value="{ret}"></form>
<script>
(async function () {{
  const seed = {seed_js}, difficulty = {difficulty};
  const enc = new TextEncoder();
  function zeros(buf) {{ const b = new Uint8Array(buf); let n = 0; for (const x of b) {{ if (x === 0) {{ n += 8; continue; }} n += Math.clz32(x) - 24; break; }} return n; }}
  for (let i = 0; ; i++) {{
    const h = await crypto.subtle.digest('SHA-256', enc.encode(seed + i));
    if (zeros(h) >= difficulty) {{ document.getElementById('nonce').value = String(i); document.getElementById('f').submit(); return; }}
  }}
}})().catch(function () {{ document.getElementById('status').textContent = 'Your browser could not complete the check. Please reload the page.'; }});
</script>
</body></html>
"#,
        id = escape(request_id),
        verify = VERIFY_PATH,
        seed = escape(seed),
        ret = escape(return_to),
        seed_js = serde_json::to_string(seed).unwrap_or_else(|_| "\"\"".into()),
        difficulty = difficulty,
    )
}

/// A safe place to return to: a path on this site, never another host.
pub fn safe_return(target: &str) -> String {
    let ok = target.starts_with('/')
        && !target.starts_with("//")
        && !target.contains(['\\', '\r', '\n'])
        && target.len() <= 2048;
    if ok {
        target.to_string()
    } else {
        "/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solved_seed_earns_a_pass_bound_to_the_client() {
        let key = ChallengeKey::new(b"secret");
        let me = binding("203.0.113.7".parse().unwrap(), "Firefox");
        let seed = key.seed(&me).unwrap();
        let nonce = solve(&seed, 8);
        let pass = key
            .verify(&seed, &nonce, &me, 8, Duration::from_secs(3600))
            .unwrap();
        assert_eq!(key.check_pass(&pass, &me), Ok(()));
        assert_eq!(
            key.verify(&seed, &nonce, &me, 8, Duration::from_secs(3600)),
            Err(ChallengeError::Replayed),
            "a solved seed buys one pass"
        );
        // Same network, other address: fine. Other network or browser: refused.
        assert_eq!(
            key.check_pass(&pass, &binding("203.0.113.99".parse().unwrap(), "Firefox")),
            Ok(())
        );
        assert_eq!(
            key.check_pass(&pass, &binding("198.51.100.7".parse().unwrap(), "Firefox")),
            Err(ChallengeError::Binding)
        );
        assert_eq!(
            key.check_pass(&pass, &binding("203.0.113.7".parse().unwrap(), "curl")),
            Err(ChallengeError::Binding)
        );
    }

    #[test]
    fn tampering_and_lazy_solutions_are_refused() {
        let key = ChallengeKey::new(b"secret");
        let me = binding("203.0.113.7".parse().unwrap(), "Firefox");
        let seed = key.seed(&me).unwrap();
        let pass = key
            .verify(&seed, &solve(&seed, 8), &me, 8, Duration::from_secs(60))
            .unwrap();
        let (payload, sig) = pass.rsplit_once('.').unwrap();
        let forged = format!("{}9.{sig}", payload);
        assert_eq!(key.check_pass(&forged, &me), Err(ChallengeError::Signature));
        assert_eq!(
            ChallengeKey::new(b"other").check_pass(&pass, &me),
            Err(ChallengeError::Signature)
        );
        assert!(key
            .verify(&seed, "x", &me, 8, Duration::from_secs(60))
            .is_err());
        // A nonce that does not reach the difficulty.
        let weak = (0u64..)
            .map(|n| n.to_string())
            .find(|n| {
                zero_bits(digest::digest(&digest::SHA256, format!("{seed}{n}").as_bytes()).as_ref())
                    == 0
            })
            .unwrap();
        assert_eq!(
            key.verify(&seed, &weak, &me, 8, Duration::from_secs(60)),
            Err(ChallengeError::Work)
        );
    }

    #[test]
    fn expired_passes_are_refused() {
        let key = ChallengeKey::new(b"secret");
        let me = "b";
        let old = key.signed(format!("{}:{me}", now_secs() - 10));
        assert_eq!(key.check_pass(&old, me), Err(ChallengeError::Expired));
    }

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(safe_return("/product/x/?a=1"), "/product/x/?a=1");
        assert_eq!(safe_return("//evil.example/"), "/");
        assert_eq!(safe_return("https://evil.example/"), "/");
        assert_eq!(safe_return("/\\evil"), "/");
    }

    #[test]
    fn the_page_escapes_what_it_echoes() {
        let p = page("s\"x", 16, "/a\"><script>", "r<1>");
        assert!(
            !p.contains("<script>\"") && p.contains("&lt;script&gt;") && p.contains("r&lt;1&gt;")
        );
    }
}
