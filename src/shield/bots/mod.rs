//! Bots: user-agent lists and the bot score, search-engine crawler
//! verification, and the proof-of-work challenge.

pub mod agents;
pub mod challenge;
pub mod crawler;
