//! Where the coordinator's outbound calls (completion webhooks) may go. A webhook URL
//! comes from whoever submits a job, so without a filter the coordinator is a relay into
//! the network it sits in (loopback services, the cloud metadata endpoint, private
//! hosts). Only public unicast addresses are allowed, plus the networks an operator lists
//! (`--webhook-allow 10.1.0.0/16,...`). The check is made on the addresses a name
//! *resolves to* at connection time (the client's resolver drops forbidden ones), so a
//! name that resolves to a public address when submitted and to a private one later
//! (DNS rebinding) is still refused; an IP literal is checked before the call.
//!
//! [`WebhookQuota`] bounds how many jobs with a webhook one API key may submit (each
//! job delivers at most once, with retries), so no key can turn the coordinator into a
//! request generator aimed at someone else's public server.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The outbound policy: public addresses, and the operator's allowed networks.
#[derive(Clone, Debug, Default)]
pub struct Egress {
    allow: Vec<IpNet>,
}

impl Egress {
    /// Public addresses plus `allow`.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Whether a call may go to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Checks a webhook URL when a job is submitted: http(s), and a host that is (or
    /// resolves to at least one) permitted address.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("webhook {url:?}: {e}"))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(format!("webhook {url:?}: only http(s) URLs"));
        }
        let refused = || {
            format!(
                "webhook {url:?}: the host is not a public address (loopback, private, \
                 link-local and metadata addresses are refused unless allowed with \
                 --webhook-allow)"
            )
        };
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) => self
                .permits(IpAddr::V4(ip))
                .then_some(())
                .ok_or_else(refused),
            Some(url::Host::Ipv6(ip)) => self
                .permits(IpAddr::V6(ip))
                .then_some(())
                .ok_or_else(refused),
            Some(url::Host::Domain(name)) => {
                let addrs = tokio::net::lookup_host((name, 0))
                    .await
                    .map_err(|e| format!("webhook {url:?}: cannot resolve {name}: {e}"))?;
                let any = addrs.map(|a| a.ip()).any(|ip| self.permits(ip));
                any.then_some(()).ok_or_else(refused)
            }
            None => Err(format!("webhook {url:?}: no host")),
        }
    }

    /// Whether a call to `url` may start: an IP-literal host is checked here (a name is
    /// checked by [`FilteringResolver`] when it is resolved).
    pub fn permits_literal(&self, url: &str) -> bool {
        match reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host().map(|h| h.to_owned()))
        {
            Some(url::Host::Ipv4(ip)) => self.permits(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.permits(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => true,
            None => false,
        }
    }
}

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918, unique
/// local), shared (CGNAT), link-local (which holds the cloud metadata endpoints,
/// 169.254.169.254 and fd00:ec2::254 aside), unspecified, multicast, broadcast,
/// benchmarking or documentation space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 among them
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// A resolver for the webhook client that drops every address the policy forbids (and
/// fails when none is left), so what is connected to is what was checked.
pub struct FilteringResolver(pub Arc<Egress>);

/// A name that resolved only to forbidden addresses.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to no address webhooks may reach")]
pub struct Forbidden(String);

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let ok: Vec<SocketAddr> = all.filter(|a| egress.permits(a.ip())).collect();
            if ok.is_empty() {
                return Err(Box::new(Forbidden(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// Jobs with a webhook one key may submit at once before it must wait.
pub const WEBHOOK_BURST: f64 = 100.0;

/// Jobs with a webhook one key may submit per hour, after the burst: a site's upload
/// stream (a few thousand videos a day) fits; a loop aimed at a third party does not.
pub const WEBHOOK_JOBS_PER_HOUR: f64 = 3600.0;

/// A token bucket per API key (keyed by the hash of the key, so the keys themselves are
/// not kept; only keys that authenticated reach it, so its size is bounded by them).
#[derive(Debug, Default)]
pub struct WebhookQuota {
    buckets: Mutex<HashMap<[u8; 32], (f64, Instant)>>,
}

impl WebhookQuota {
    /// Takes one job from `key`'s bucket at `now`: `Ok`, or the seconds until one is there.
    pub fn take(&self, key: [u8; 32], now: Instant) -> Result<(), u64> {
        let per_sec = WEBHOOK_JOBS_PER_HOUR / 3600.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(key).or_insert((WEBHOOK_BURST, now));
        let refilled = now.saturating_duration_since(*at).as_secs_f64() * per_sec;
        *tokens = (*tokens + refilled).min(WEBHOOK_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_unicast_addresses_pass() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(bad)), "{bad} passed");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "151.101.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(good)), "{good} refused");
        }
    }

    #[test]
    fn the_allow_list_opens_exactly_its_networks() {
        let e = Egress::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.9.0.0/16".parse().unwrap(),
        ]);
        assert!(e.permits(ip("127.0.0.1")) && e.permits(ip("10.9.200.1")));
        assert!(!e.permits(ip("10.8.0.1")) && !e.permits(ip("169.254.169.254")));
        assert!(e.permits_literal("http://127.0.0.1:9/hook"));
        assert!(!Egress::default().permits_literal("http://127.0.0.1:9/hook"));
        assert!(!Egress::default().permits_literal("http://[::1]:9/hook"));
        assert!(Egress::default().permits_literal("http://example.com/hook"));
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let strict = Egress::default();
        let err = strict
            .check_url("http://localhost:9/hook")
            .await
            .unwrap_err();
        assert!(err.contains("not a public address"), "{err}");
        assert!(strict
            .check_url("http://169.254.169.254/latest/meta-data")
            .await
            .is_err());
        assert!(strict.check_url("ftp://example.com/").await.is_err());
        let open = Egress::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        open.check_url("http://localhost:9/hook").await.unwrap();
        // The client's resolver drops forbidden addresses: nothing is left for localhost.
        let name: Name = "localhost".parse().unwrap();
        let r = FilteringResolver(Arc::new(strict)).resolve(name).await;
        assert!(r.is_err());
    }

    #[test]
    fn each_key_gets_its_burst_then_the_hourly_rate() {
        let q = WebhookQuota::default();
        let t0 = Instant::now();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        for _ in 0..WEBHOOK_BURST as usize {
            q.take(a, t0).unwrap();
        }
        let wait = q.take(a, t0).unwrap_err();
        assert_eq!(wait, (3600.0 / WEBHOOK_JOBS_PER_HOUR).ceil() as u64);
        q.take(b, t0).unwrap(); // another key is not affected
        let later = t0 + std::time::Duration::from_secs(wait);
        q.take(a, later).unwrap();
        assert!(q.take(a, later).is_err());
    }
}
