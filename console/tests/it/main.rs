//! The steward console against real PostgreSQL and a real browser
//! (Debian's chromium driven through chromedriver).

mod browser;
mod guard;
mod oidc;
mod overview;
mod search;
mod support;
mod throttle;
