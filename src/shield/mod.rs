//! Abuse control: IP lists, bans, rate limits, bots (crawler check and
//! challenge) and logins (brute force and card testing).

pub mod bans;
pub mod bots;
pub mod ip_filter;
pub mod logins;
pub mod rate_limit;
