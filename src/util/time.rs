//! Wall-clock time as Rempart writes it: seconds since the Unix epoch (ban
//! state, challenge seeds) and RFC 3339 in UTC (the admin API, logs).

use std::time::SystemTime;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-29T14:00:00Z` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_424_800_250);
        assert_eq!(rfc3339(t), "2025-11-29T14:00:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
