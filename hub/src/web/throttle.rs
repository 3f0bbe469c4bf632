//! Login throttling (issue 21): per account and per client address, each attempt beyond the
//! first few free ones makes the next wait twice as long, up to a cap; attempts are forgotten
//! after a quiet period. An attempt counts when it starts (so that parallel guesses are
//! throttled as well as sequential ones); a successful login forgives the account and gives
//! the address its attempt back. Both tables are bounded: when full, forgotten entries go
//! first, then the least recently used. Pure: the caller passes the clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// How one table throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts without delay.
    pub free: u32,
    /// The delay after the first attempt beyond `free`; each further one doubles it.
    pub first_delay_ms: i64,
    pub max_delay_ms: i64,
    /// An entry without attempt for this long starts again from zero.
    pub forget_ms: i64,
    /// The most entries kept.
    pub capacity: usize,
}

/// Accounts: a short cap, so that someone guessing an admin's password cannot keep the admin
/// out for long (one guess a minute is nothing against Argon2id and 10 characters).
pub const ACCOUNTS: Policy = Policy {
    free: 5,
    first_delay_ms: 1_000,
    max_delay_ms: 60_000,
    forget_ms: 3_600_000,
    capacity: 10_000,
};

/// Addresses: a longer cap; one address trying many accounts is a scan.
pub const ADDRESSES: Policy = Policy {
    free: 10,
    first_delay_ms: 1_000,
    max_delay_ms: 900_000,
    forget_ms: 3_600_000,
    capacity: 10_000,
};

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    attempts: u32,
    last_ms: i64,
    until_ms: i64,
}

/// One table of attempts by key.
#[derive(Debug)]
pub struct Table<K> {
    policy: Policy,
    map: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    pub fn new(policy: Policy) -> Table<K> {
        Table {
            policy,
            map: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn delay(&self, attempts: u32) -> i64 {
        if attempts <= self.policy.free {
            return 0;
        }
        let doublings = (attempts - self.policy.free - 1).min(40);
        self.policy
            .first_delay_ms
            .saturating_mul(1i64 << doublings)
            .min(self.policy.max_delay_ms)
    }

    /// Milliseconds `key` must still wait, if any.
    pub fn wait(&mut self, key: &K, now_ms: i64) -> Option<i64> {
        let e = self.map.get(key)?;
        if now_ms - e.last_ms > self.policy.forget_ms {
            self.map.remove(key);
            return None;
        }
        (e.until_ms > now_ms).then_some(e.until_ms - now_ms)
    }

    /// Counts an attempt of `key`.
    pub fn attempt(&mut self, key: &K, now_ms: i64) {
        if !self.map.contains_key(key) && self.map.len() >= self.policy.capacity {
            self.make_room(now_ms);
        }
        let forget = self.policy.forget_ms;
        let e = self.map.entry(key.clone()).or_default();
        if now_ms - e.last_ms > forget {
            *e = Entry::default();
        }
        e.attempts = e.attempts.saturating_add(1);
        e.last_ms = now_ms;
        let attempts = e.attempts;
        let until = now_ms + self.delay(attempts);
        if let Some(e) = self.map.get_mut(key) {
            e.until_ms = until;
        }
    }

    /// Forgets `key` altogether.
    pub fn forgive(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Takes back one attempt of `key` (it was not a failure).
    pub fn undo(&mut self, key: &K) {
        let Some(e) = self.map.get_mut(key) else {
            return;
        };
        e.attempts = e.attempts.saturating_sub(1);
        let attempts = e.attempts;
        let last = e.last_ms;
        let delay = self.delay(attempts);
        if let Some(e) = self.map.get_mut(key) {
            e.until_ms = if delay > 0 { last + delay } else { 0 };
        }
    }

    /// Drops forgotten entries, then, if that is not enough, the least recently used eighth.
    fn make_room(&mut self, now_ms: i64) {
        let forget = self.policy.forget_ms;
        self.map.retain(|_, e| now_ms - e.last_ms <= forget);
        if self.map.len() < self.policy.capacity {
            return;
        }
        let mut lasts: Vec<i64> = self.map.values().map(|e| e.last_ms).collect();
        let cut = lasts.len() / 8;
        let (_, nth, _) = lasts.select_nth_unstable(cut);
        let threshold = *nth;
        self.map.retain(|_, e| e.last_ms > threshold);
    }
}

/// Both tables.
#[derive(Debug)]
pub struct Throttle {
    pub accounts: Table<String>,
    pub addresses: Table<IpAddr>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            accounts: Table::new(ACCOUNTS),
            addresses: Table::new(ADDRESSES),
        }
    }
}

impl Throttle {
    /// A login attempt for `account` from `addr`: counted, or refused with the milliseconds
    /// to wait (then not counted).
    pub fn begin(&mut self, account: &str, addr: IpAddr, now_ms: i64) -> Result<(), i64> {
        let account = account.to_owned();
        let wait = self
            .accounts
            .wait(&account, now_ms)
            .max(self.addresses.wait(&addr, now_ms));
        if let Some(ms) = wait {
            return Err(ms);
        }
        self.accounts.attempt(&account, now_ms);
        self.addresses.attempt(&addr, now_ms);
        Ok(())
    }

    /// The attempt was never checked (no place for the password check): it does not count.
    pub fn abandoned(&mut self, account: &str, addr: IpAddr) {
        self.accounts.undo(&account.to_owned());
        self.addresses.undo(&addr);
    }

    /// The attempt succeeded.
    pub fn succeeded(&mut self, account: &str, addr: IpAddr) {
        self.accounts.forgive(&account.to_owned());
        self.addresses.undo(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn delays_double_up_to_the_cap_and_are_forgotten() {
        let mut t = Throttle::default();
        let mut now = 0;
        // The free attempts.
        for _ in 0..ACCOUNTS.free {
            assert_eq!(t.begin("admin", ip(1), now), Ok(()));
        }
        // Then 1 s, 2 s, 4 s... up to a minute, each attempt only after the previous wait.
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert_eq!(t.begin("admin", ip(1), now), Ok(()));
            let w = t.begin("admin", ip(1), now).unwrap_err();
            waits.push(w);
            // Refused attempts are not counted: the wait is the same.
            assert_eq!(t.begin("admin", ip(1), now + 1), Err(w - 1));
            now += w;
        }
        assert_eq!(
            waits,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000
            ]
        );
        // Another address is held by the account's delay too...
        assert!(t.begin("admin", ip(2), now - 1).is_err());
        // ...and once it is over, the right password resets the account.
        assert_eq!(t.begin("admin", ip(2), now), Ok(()));
        t.succeeded("admin", ip(2));
        assert_eq!(t.begin("admin", ip(2), now), Ok(()));
        // An hour of quiet forgets everything.
        let later = now + ACCOUNTS.forget_ms + 1;
        for _ in 0..ACCOUNTS.free {
            assert_eq!(t.begin("other", ip(1), later), Ok(()));
        }
    }

    #[test]
    fn one_address_trying_many_accounts_is_throttled() {
        let mut t = Throttle::default();
        for i in 0..ADDRESSES.free {
            assert_eq!(t.begin(&format!("user{i}"), ip(9), 0), Ok(()));
        }
        assert_eq!(t.begin("user-next", ip(9), 0), Ok(()));
        assert_eq!(t.begin("yet-another", ip(9), 0), Err(1_000));
        // Another address is not held.
        assert_eq!(t.begin("yet-another", ip(10), 0), Ok(()));
    }

    #[test]
    fn parallel_attempts_count_when_they_start() {
        let mut t = Throttle::default();
        let started = (0..250)
            .filter(|_| t.begin("admin", ip(3), 0).is_ok())
            .count();
        assert_eq!(started as u32, ACCOUNTS.free + 1);
        // Attempts that never got a password check give their place back.
        let mut t = Throttle::default();
        for _ in 0..20 {
            assert_eq!(t.begin("admin", ip(4), 0), Ok(()));
            t.abandoned("admin", ip(4));
        }
    }

    #[test]
    fn tables_stay_bounded() {
        let mut t = Throttle::default();
        for i in 0..50_000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            let _ = t.begin(&format!("user-{i}"), addr, i as i64);
        }
        assert!(
            t.accounts.len() <= ACCOUNTS.capacity,
            "{}",
            t.accounts.len()
        );
        assert!(t.addresses.len() <= ADDRESSES.capacity);
        // The most recent ones are kept.
        assert!(t.accounts.map.contains_key("user-49999"));
    }
}
