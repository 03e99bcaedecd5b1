//! Failed sign-ins counted per account name and per client address: after
//! too many, sign-in is refused (429) for a while, before any password is
//! checked. Kept in memory: a restart forgets the counts, which costs an
//! attacker a restart of the service per round and costs no table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most names and addresses remembered; past it, expired counts are
/// dropped, and failures of names not yet counted are not remembered (the
/// address count still applies to them), so that a flood of invented
/// names cannot grow the map without end.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Name(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Which count refused a sign-in, for the log line (never the name or the
/// address itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Account,
    Address,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Account => "account",
            Refusal::Address => "address",
        }
    }
}

pub struct SignInThrottle {
    per_account: u32,
    per_address: u32,
    window: Duration,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl SignInThrottle {
    /// After `per_account` failures for one name, or `per_address` from one
    /// address, each less than `window` after the one before, sign-in is
    /// refused until `window` has passed since the last failure.
    pub fn new(per_account: u32, per_address: u32, window: Duration) -> SignInThrottle {
        SignInThrottle {
            per_account,
            per_address,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(name: &str, address: Option<IpAddr>) -> impl Iterator<Item = (Key, Refusal)> {
        let name = (Key::Name(name.to_string()), Refusal::Account);
        std::iter::once(name).chain(address.map(|a| (Key::Address(a), Refusal::Address)))
    }

    /// `Err` (which count, and how long until it lets sign-in again) when
    /// sign-in as `name` from `address` is refused now.
    pub fn check(&self, name: &str, address: Option<IpAddr>) -> Result<(), (Refusal, Duration)> {
        let map = self.failures.lock().expect("not poisoned");
        for (key, refusal) in Self::keys(name, address) {
            let limit = match refusal {
                Refusal::Account => self.per_account,
                Refusal::Address => self.per_address,
            };
            if let Some(f) = map.get(&key) {
                let since = f.last.elapsed();
                if f.count >= limit && since < self.window {
                    return Err((refusal, self.window - since));
                }
            }
        }
        Ok(())
    }

    /// Counts a failed sign-in.
    pub fn failed(&self, name: &str, address: Option<IpAddr>) {
        let mut map = self.failures.lock().expect("not poisoned");
        if map.len() >= MAX_TRACKED {
            let window = self.window;
            map.retain(|_, f| f.last.elapsed() < window);
        }
        let now = Instant::now();
        for (key, _) in Self::keys(name, address) {
            let full = map.len() >= MAX_TRACKED;
            let known = map.contains_key(&key);
            if full && !known && matches!(key, Key::Name(_)) {
                continue;
            }
            let f = map.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(f.last) >= self.window {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
    }

    /// A successful sign-in clears the name's count (the address's stays:
    /// one right password does not excuse many wrong ones for other names).
    pub fn succeeded(&self, name: &str) {
        let mut map = self.failures.lock().expect("not poisoned");
        map.remove(&Key::Name(name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_passes() {
        let t = SignInThrottle::new(3, 5, Duration::from_millis(200));
        let home: Option<IpAddr> = Some([10, 0, 0, 1].into());
        for _ in 0..3 {
            assert!(t.check("anna", home).is_ok());
            t.failed("anna", home);
        }
        let (by, wait) = t.check("anna", home).unwrap_err();
        assert_eq!(by, Refusal::Account);
        assert!(wait <= Duration::from_millis(200));
        // Another name from the same address: two more failures stop it.
        t.failed("boris", home);
        assert!(t.check("boris", home).is_ok());
        t.failed("boris", home);
        assert_eq!(t.check("victor", home).unwrap_err().0, Refusal::Address);
        assert!(t.check("victor", Some([10, 0, 0, 2].into())).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check("anna", home).is_ok());
        t.succeeded("anna");
        t.failed("anna", home);
        assert!(t.check("anna", home).is_ok());
    }
}
