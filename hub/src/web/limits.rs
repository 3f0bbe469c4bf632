//! The web side's bounds (issue 21): how long a client may take to send its request, how many
//! connections it may hold, how much it may send, how many password checks and heavy queries
//! run at once, and how large an answer may be. Read from `[http.limits]` (every field
//! optional) and `[http] trusted_proxies`; docs/hub-config.md lists them with their defaults.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::parse_duration;

/// `[http.limits]` as written.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub header_timeout: Option<String>,
    #[serde(default)]
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub stall_timeout: Option<String>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub max_connections_per_address: Option<usize>,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub heavy_queries: Option<usize>,
    #[serde(default)]
    pub password_checks: Option<usize>,
}

/// The bounds in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A client must have sent a request's whole header within this time of connecting (or of
    /// the previous answer on a kept-alive connection); else the connection is closed.
    pub header_timeout: Duration,
    /// A request (its body read included) must be answered within this time (408); a streamed
    /// export only has to start within it.
    pub request_timeout: Duration,
    /// The longest pause in a request body, and in a client's reading of an answer, before
    /// the connection is closed.
    pub stall_timeout: Duration,
    /// Connections open at once, over all clients; more wait in the kernel's queue.
    pub max_connections: usize,
    /// Connections open at once from one address (an IPv6 /64 counts as one); more are closed
    /// at once. Trusted proxies are not limited.
    pub max_connections_per_address: usize,
    /// The largest request body (the admin forms are a few hundred bytes).
    pub max_body_bytes: usize,
    /// Heavy queries (series API, exports) run at once; others wait [`Limits::queue_wait`].
    pub heavy_queries: usize,
    /// Argon2 password checks run at once (19 MiB each); others wait [`Limits::queue_wait`].
    pub password_checks: usize,
    /// How long a request waits for a heavy query or password check slot before a 503.
    pub queue_wait: Duration,
    /// The most windows the series API returns with `bucket=window`.
    pub max_series_windows: u64,
    /// The most lines an export streams.
    pub max_export_rows: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_address: 64,
            max_body_bytes: 64 << 10,
            heavy_queries: 2,
            password_checks: 2,
            queue_wait: Duration::from_secs(10),
            max_series_windows: 50_000,
            max_export_rows: 2_000_000,
        }
    }
}

impl Limits {
    /// Validates `[http.limits]`; an error is (field, what is expected).
    pub fn from_raw(raw: &RawLimits) -> Result<Limits, (String, String)> {
        let d = Limits::default();
        let duration = |name: &str, v: &Option<String>, def: Duration| match v {
            None => Ok(def),
            Some(s) => parse_duration(s)
                .filter(|d| (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(d))
                .ok_or_else(|| {
                    (
                        name.to_owned(),
                        "a duration from 100ms to 1h, like \"10s\"".to_owned(),
                    )
                }),
        };
        let count = |name: &str, v: Option<usize>, def: usize, max: usize| match v {
            None => Ok(def),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err((name.to_owned(), format!("a number from 1 to {max}"))),
        };
        Ok(Limits {
            header_timeout: duration("header_timeout", &raw.header_timeout, d.header_timeout)?,
            request_timeout: duration("request_timeout", &raw.request_timeout, d.request_timeout)?,
            stall_timeout: duration("stall_timeout", &raw.stall_timeout, d.stall_timeout)?,
            max_connections: count(
                "max_connections",
                raw.max_connections,
                d.max_connections,
                1 << 20,
            )?,
            max_connections_per_address: count(
                "max_connections_per_address",
                raw.max_connections_per_address,
                d.max_connections_per_address,
                1 << 20,
            )?,
            max_body_bytes: count(
                "max_body_bytes",
                raw.max_body_bytes,
                d.max_body_bytes,
                64 << 20,
            )?,
            heavy_queries: count("heavy_queries", raw.heavy_queries, d.heavy_queries, 64)?,
            password_checks: count(
                "password_checks",
                raw.password_checks,
                d.password_checks,
                64,
            )?,
            ..d
        })
    }
}

/// `[http] trusted_proxies`: addresses whose `X-Forwarded-For` is believed.
pub fn trusted_proxies(raw: &[String]) -> Result<Vec<IpAddr>, String> {
    raw.iter()
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address (like \"127.0.0.1\" or \"::1\")"))
        })
        .collect()
}

/// The address a client is counted under: IPv4 as is, an IPv4-mapped IPv6 address as IPv4,
/// other IPv6 addresses by their /64 (what one subscriber usually holds).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the last
/// address of `X-Forwarded-For` that is not itself a trusted proxy (proxies append the address
/// they got the request from; what comes before it the client may have written itself).
pub fn client_addr(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpAddr]) -> IpAddr {
    let peer = client_key(peer);
    let trusted_ip = |ip: IpAddr| trusted.iter().any(|t| client_key(*t) == client_key(ip));
    if !trusted_ip(peer) {
        return peer;
    }
    let hops = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted_ip(ip) => continue,
            Ok(ip) => return client_key(ip),
            // Garbage where an address should be: stop believing the header there.
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_address_comes_from_a_trusted_proxy_only() {
        let proxy = [ip("10.0.0.1")];
        // Not from the proxy: the header is the client's own writing.
        assert_eq!(
            client_addr(ip("192.0.2.7"), &["203.0.113.9"], &proxy),
            ip("192.0.2.7")
        );
        // From the proxy: the last hop it appended.
        assert_eq!(
            client_addr(ip("10.0.0.1"), &["203.0.113.9"], &proxy),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(ip("10.0.0.1"), &["1.2.3.4, 203.0.113.9"], &proxy),
            ip("203.0.113.9"),
            "what the client wrote before the proxy's entry is ignored"
        );
        assert_eq!(
            client_addr(ip("10.0.0.1"), &["203.0.113.9", "10.0.0.1"], &proxy),
            ip("203.0.113.9"),
            "chained proxies are skipped"
        );
        assert_eq!(client_addr(ip("10.0.0.1"), &[], &proxy), ip("10.0.0.1"));
        assert_eq!(
            client_addr(ip("10.0.0.1"), &["junk"], &proxy),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_addr(ip("10.0.0.1"), &["2001:db8:1:2:3:4:5:6"], &proxy),
            ip("2001:db8:1:2::"),
            "IPv6 by /64"
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(
            Limits::from_raw(&RawLimits::default()).unwrap(),
            Limits::default()
        );
        let l = Limits::from_raw(&RawLimits {
            header_timeout: Some("2s".into()),
            heavy_queries: Some(4),
            ..RawLimits::default()
        })
        .unwrap();
        assert_eq!(
            (l.header_timeout, l.heavy_queries),
            (Duration::from_secs(2), 4)
        );
        for (raw, field) in [
            (
                RawLimits {
                    header_timeout: Some("0s".into()),
                    ..Default::default()
                },
                "header_timeout",
            ),
            (
                RawLimits {
                    request_timeout: Some("soon".into()),
                    ..Default::default()
                },
                "request_timeout",
            ),
            (
                RawLimits {
                    max_connections: Some(0),
                    ..Default::default()
                },
                "max_connections",
            ),
            (
                RawLimits {
                    password_checks: Some(1000),
                    ..Default::default()
                },
                "password_checks",
            ),
        ] {
            assert_eq!(Limits::from_raw(&raw).unwrap_err().0, field);
        }
        assert!(trusted_proxies(&["127.0.0.1".into(), "::1".into()]).is_ok());
        assert!(
            trusted_proxies(&["proxy.local".into()])
                .unwrap_err()
                .contains("proxy.local")
        );
    }
}
