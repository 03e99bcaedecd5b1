//! The steward console against real PostgreSQL and a real browser
//! (Debian's chromium driven through chromedriver).

mod browser;
mod guard;
mod overview;
mod search;
mod support;
