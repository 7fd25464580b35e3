//! Which URLs a webhook may call. A URL is refused when its host is, or
//! resolves to, an address that is not public (loopback, private,
//! link-local, multicast, unspecified, …): at creation, and again at every
//! connection the deliverer makes (DNS can change), through a resolver that
//! hands reqwest only public addresses. `ROSTER_WEBHOOK_ALLOW_PRIVATE`
//! turns both checks off and allows `http`.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How long a host's resolution may take.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest URL accepted.
pub const URL_MAX: usize = 2048;

/// Whether `ip` is a public unicast address.
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
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || a >= 240 // reserved
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))) // benchmarking
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: an IPv4 address inside
        || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
}

/// Checks a URL a client gives: absolute, `https` (or `http` when private
/// addresses are allowed), at most [`URL_MAX`] characters, no credentials,
/// and a host that is a public address or resolves only to public ones.
/// The error is the message for the `url` field.
pub async fn check_url(text: &str, allow_private: bool) -> Result<Url, String> {
    if text.len() > URL_MAX {
        return Err(format!("must be at most {URL_MAX} characters"));
    }
    let url = Url::parse(text).map_err(|_| "must be an absolute URL".to_string())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("must be an https URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials".into());
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err("must name a host".into());
    };
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = public_addrs(host, port)
        .await
        .map_err(|e| format!("must have a public address: {e}"))?;
    if addrs.is_empty() {
        return Err("must have a public address".into());
    }
    Ok(url)
}

/// The addresses `host` resolves to (or is), all public; an error names
/// the first that is not.
async fn public_addrs(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| format!("{host} does not resolve in time"))?
            .map_err(|_| format!("{host} does not resolve"))?
            .collect(),
    };
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Err(format!("{host} is {} (not public)", a.ip())),
        None => Ok(addrs),
    }
}

/// Refuses, at send time, a URL whose host is an address literal that is
/// not public (reqwest asks no resolver for those).
pub fn check_literal(url: &Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else {
        return Ok(());
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(format!("refused: {ip} is not public"))
    }
}

/// reqwest's resolver for the deliverer: only public addresses, checked at
/// each connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs = public_addrs(name.as_str(), 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().expect("address")), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().expect("address")), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked() {
        for (url, why) in [
            ("http://93.184.216.34/", "https"),
            ("ftp://93.184.216.34/", "https"),
            ("https://127.0.0.1/hook", "not public"),
            ("https://[::1]/hook", "not public"),
            ("https://169.254.169.254/latest", "not public"),
            ("https://10.0.0.7:8443/", "not public"),
            ("https://localhost/hook", "not public"),
            ("https://user:pw@93.184.216.34/", "credentials"),
            ("hook", "absolute"),
        ] {
            let e = check_url(url, false).await.expect_err(url);
            assert!(e.contains(why), "{url}: {e}");
        }
        assert!(check_url("https://93.184.216.34/hook", false).await.is_ok());
        let long = format!("https://93.184.216.34/{}", "a".repeat(URL_MAX));
        assert!(check_url(&long, false).await.is_err());
        // Allowed in development.
        assert!(check_url("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check_literal(&Url::parse("http://127.0.0.1/").expect("url")).is_err());
        assert!(check_literal(&Url::parse("https://8.8.8.8/").expect("url")).is_ok());
    }
}
