//! Virtual-hosted-style addressing: with a base domain configured (`s3_domain`, e.g.
//! `s3.example.com`), a request to `photos.s3.example.com` is for bucket `photos`;
//! requests to the base domain itself, or to any other host (an IP address, a load
//! balancer's name), are path-style (`/bucket/key`).

use s3s::host::{S3Host, VirtualHost};
use s3s::S3Result;

/// The base domain of virtual-hosted buckets.
pub struct VirtualHosts {
    domain: String,
}

impl VirtualHosts {
    /// Buckets as subdomains of `domain` (no port; any port is accepted).
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

/// `host` without its port (`[v6]:port` and `name:port`).
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

impl S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = without_port(host);
        let bucket = name
            .strip_suffix(self.domain.as_str())
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty());
        Ok(match bucket {
            Some(b) => VirtualHost::new(self.domain.as_str()).with_bucket(b),
            None => VirtualHost::new(self.domain.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_subdomains_of_the_base_domain_only() {
        let h = VirtualHosts::new("s3.example.com");
        let bucket = |host: &str| {
            h.parse_host_header(host)
                .unwrap()
                .bucket()
                .map(str::to_string)
        };
        assert_eq!(bucket("photos.s3.example.com"), Some("photos".into()));
        assert_eq!(bucket("photos.s3.example.com:9000"), Some("photos".into()));
        assert_eq!(
            bucket("my.dotted.bucket.s3.example.com"),
            Some("my.dotted.bucket".into())
        );
        assert_eq!(bucket("s3.example.com"), None);
        assert_eq!(bucket("s3.example.com:9000"), None);
        assert_eq!(bucket("127.0.0.1:9000"), None);
        assert_eq!(bucket("[::1]:9000"), None);
        assert_eq!(bucket("[unclosed"), None);
        assert_eq!(bucket("evil-s3.example.com"), None);
        assert_eq!(bucket("lb.internal"), None);
    }
}
