//! Where webhooks may point. An agency's URL must not turn the platform into
//! a way into its own network: hosts that resolve to loopback, private,
//! link-local, cloud metadata, shared (CGNAT), multicast, broadcast,
//! unspecified or reserved addresses are refused, at registration and again
//! at every connection, where the addresses checked are the only ones the
//! HTTP client may use, so a name that resolves elsewhere later (DNS
//! rebinding) cannot switch the connection to an internal address. An
//! operator's allow-list (`notifications.webhook_allow_hosts`: host names or
//! CIDRs) lets named internal destinations through; development may allow
//! loopback. A refusal tells the agency one generic thing, never which
//! address a name resolved to.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// The one message an agency sees for any refused destination.
pub const REFUSED_MESSAGE: &str = "is not an allowed destination";

/// What kind of address an IP is, for the destination rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    /// RFC 1918, and IPv6 unique local (fc00::/7).
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// Cloud instance metadata (169.254.169.254, fd00:ec2::254).
    Metadata,
    /// 100.64/10, carrier-grade NAT.
    Shared,
    Unspecified,
    Multicast,
    Broadcast,
    /// "This network", documentation, benchmarking, IETF and future-use ranges.
    Reserved,
}

/// Classifies an address; IPv4 embedded in IPv6 (mapped, compatible, NAT64)
/// is classified as the IPv4 address it carries.
pub fn classify(address: IpAddr) -> AddressClass {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(address: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = address.octets();
    if address == Ipv4Addr::new(169, 254, 169, 254) {
        AddressClass::Metadata
    } else if address.is_unspecified() {
        AddressClass::Unspecified
    } else if address.is_loopback() {
        AddressClass::Loopback
    } else if address.is_private() {
        AddressClass::Private
    } else if address.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::Shared
    } else if address.is_broadcast() {
        AddressClass::Broadcast
    } else if address.is_multicast() {
        AddressClass::Multicast
    } else if a == 0
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(address: Ipv6Addr) -> AddressClass {
    let segments = address.segments();
    if let Some(v4) = address.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form (::a.b.c.d).
    let embeds_v4 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6];
    if embeds_v4 && !address.is_loopback() && !address.is_unspecified() {
        let [.., high, low] = segments;
        return classify_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    if address == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        AddressClass::Metadata
    } else if address.is_unspecified() {
        AddressClass::Unspecified
    } else if address.is_loopback() {
        AddressClass::Loopback
    } else if segments[0] & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if segments[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if address.is_multicast() {
        AddressClass::Multicast
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 || segments[0] & 0xffc0 == 0xfec0 {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// An address range of the allow-list, `address/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.1.0.0/16`, `fd00::/8`, or a single address.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse().ok().filter(|p| *p <= bits)?,
            None => bits,
        };
        Some(Self { network, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        fn masked(value: u128, prefix: u8, bits: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                value >> (bits - prefix)
            }
        }
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                masked(u32::from(network).into(), self.prefix, 32)
                    == masked(u32::from(address).into(), self.prefix, 32)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                masked(network.into(), self.prefix, 128) == masked(address.into(), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Why a destination was refused. Only [`REFUSED_MESSAGE`] reaches an agency.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the host resolves to a refused address ({0:?})")]
    Address(AddressClass),
    #[error("the host did not resolve")]
    Unresolved,
    #[error("the URL names no host")]
    NoHost,
}

/// The destination rule: the allow-list and whether loopback is allowed.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    allowed_hosts: Vec<String>,
    allowed_ranges: Vec<Cidr>,
    allow_loopback: bool,
}

/// Resolves a host name to addresses (the system resolver in service; a
/// scripted one in tests).
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver, through tokio.
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|address| address.ip())
                .collect())
        })
    })
}

impl DestinationPolicy {
    /// From the allow-list entries (a CIDR or address, else a host name);
    /// `Err` names an entry that is neither.
    pub fn new(allow: &[String], allow_loopback: bool) -> Result<Self, String> {
        let mut policy = Self {
            allow_loopback,
            ..Self::default()
        };
        for entry in allow {
            let entry = entry.trim();
            if let Some(range) = Cidr::parse(entry) {
                policy.allowed_ranges.push(range);
            } else if !entry.is_empty()
                && !entry.contains('/')
                && entry
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                policy.allowed_hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(entry.to_owned());
            }
        }
        Ok(policy)
    }

    fn host_is_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.contains(&host)
    }

    /// Whether `host` may be reached at `address`.
    pub fn allows(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        match classify(address) {
            AddressClass::Public => Ok(()),
            AddressClass::Loopback if self.allow_loopback => Ok(()),
            _ if self.host_is_allowed(host) => Ok(()),
            _ if self
                .allowed_ranges
                .iter()
                .any(|range| range.contains(address)) =>
            {
                Ok(())
            }
            class => Err(Refused::Address(class)),
        }
    }

    /// The addresses `host` may be reached at: every address it resolves to
    /// must be allowed (one refused address refuses the host), so the client
    /// can only ever connect to checked ones.
    pub async fn resolve(&self, lookup: &Lookup, host: &str) -> Result<Vec<IpAddr>, Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(address) = host.parse::<IpAddr>() {
            self.allows(host, address)?;
            return Ok(vec![address]);
        }
        let addresses = lookup(host.to_owned())
            .await
            .map_err(|_| Refused::Unresolved)?;
        if addresses.is_empty() {
            return Err(Refused::Unresolved);
        }
        for address in &addresses {
            self.allows(host, *address)?;
        }
        Ok(addresses)
    }

    /// Checks a URL's host (registration, and before each post of a URL
    /// with an address literal, which the client does not resolve).
    pub async fn check_url(&self, lookup: &Lookup, url: &reqwest::Url) -> Result<(), Refused> {
        let host = url.host_str().ok_or(Refused::NoHost)?;
        self.resolve(lookup, host).await.map(|_| ())
    }
}

/// The HTTP client's resolver: resolves through the policy, so a connection
/// is only ever made to an address that was checked just then.
pub struct GuardedResolver {
    pub policy: Arc<DestinationPolicy>,
    pub lookup: Lookup,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, lookup) = (self.policy.clone(), self.lookup.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = policy.resolve(&lookup, &host).await?;
            let addresses: reqwest::dns::Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|address| SocketAddr::new(address, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addresses)
        })
    }
}

/// Whether a client error came from a refused destination.
pub fn refused_in(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.downcast_ref::<Refused>().is_some() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn class(text: &str) -> AddressClass {
        classify(text.parse().unwrap())
    }

    #[test]
    fn every_internal_range_is_classified() {
        use AddressClass::*;
        for (address, expected) in [
            ("8.8.8.8", Public),
            ("93.184.216.34", Public),
            ("2606:4700::1111", Public),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("::1", Loopback),
            ("10.0.0.1", Private),
            ("172.16.5.4", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("169.254.1.1", LinkLocal),
            ("fe80::1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("fd00:ec2::254", Metadata),
            ("100.64.0.1", Shared),
            ("100.127.255.254", Shared),
            ("0.0.0.0", Unspecified),
            ("::", Unspecified),
            ("224.0.0.1", Multicast),
            ("ff02::1", Multicast),
            ("255.255.255.255", Broadcast),
            ("0.1.2.3", Reserved),
            ("240.0.0.1", Reserved),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("2001:db8::1", Reserved),
            // IPv4 inside IPv6 is judged as the IPv4 address.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", Metadata),
            ("64:ff9b::a00:1", Private),
            ("::ffff:8.8.8.8", Public),
        ] {
            assert_eq!(class(address), expected, "{address}");
        }
        // Neighbours of the ranges stay public.
        for address in ["172.32.0.1", "100.128.0.1", "11.0.0.1", "169.253.0.1"] {
            assert_eq!(class(address), Public, "{address}");
        }
    }

    #[test]
    fn ranges_parse_and_contain() {
        let range = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(range.contains("10.1.200.3".parse().unwrap()));
        assert!(!range.contains("10.2.0.1".parse().unwrap()));
        assert!(!range.contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("hooks.internal"), None);
    }

    #[test]
    fn the_allow_list_takes_names_and_ranges_and_refuses_anything_else() {
        let policy =
            DestinationPolicy::new(&["Hooks.Internal".into(), "10.9.0.0/16".into()], false)
                .unwrap();
        let private = "10.1.0.1".parse().unwrap();
        assert_eq!(policy.allows("hooks.internal", private), Ok(()));
        assert_eq!(policy.allows("HOOKS.internal.", private), Ok(()));
        assert_eq!(
            policy.allows("other.internal", private),
            Err(Refused::Address(AddressClass::Private))
        );
        assert_eq!(
            policy.allows("other.internal", "10.9.3.3".parse().unwrap()),
            Ok(())
        );
        assert!(DestinationPolicy::new(&["http://x/".into()], false).is_err());
        assert!(DestinationPolicy::new(&["a b".into()], false).is_err());
    }

    #[test]
    fn loopback_is_allowed_only_when_configured() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            DestinationPolicy::new(&[], true)
                .unwrap()
                .allows("x", loopback)
                .is_ok()
        );
        assert_eq!(
            DestinationPolicy::new(&[], false)
                .unwrap()
                .allows("x", loopback),
            Err(Refused::Address(AddressClass::Loopback))
        );
        // Development's loopback allowance does not open the rest.
        assert!(
            DestinationPolicy::new(&[], true)
                .unwrap()
                .allows("x", "169.254.169.254".parse().unwrap())
                .is_err()
        );
    }

    fn scripted(answers: Vec<Vec<&'static str>>) -> Lookup {
        let answers = Mutex::new(answers.into_iter());
        let answers = Arc::new(answers);
        Arc::new(move |_host: String| {
            let next: Vec<IpAddr> = answers
                .lock()
                .unwrap()
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.parse().unwrap())
                .collect();
            Box::pin(async move { Ok(next) })
        })
    }

    #[tokio::test]
    async fn a_name_that_later_resolves_inside_is_refused_at_connect_time() {
        let policy = DestinationPolicy::new(&[], false).unwrap();
        // Registration sees a public address; the connection's own lookup
        // sees the rebound one.
        let lookup = scripted(vec![vec!["93.184.216.34"], vec!["127.0.0.1"]]);
        let url = reqwest::Url::parse("https://hooks.agency.example/cpm").unwrap();
        assert_eq!(policy.check_url(&lookup, &url).await, Ok(()));
        let resolver = GuardedResolver {
            policy: Arc::new(policy),
            lookup,
        };
        let name: reqwest::dns::Name = "hooks.agency.example".parse().unwrap();
        let error = reqwest::dns::Resolve::resolve(&resolver, name)
            .await
            .err()
            .expect("refused");
        assert!(refused_in(error.as_ref()));
    }

    #[tokio::test]
    async fn one_internal_address_among_public_ones_refuses_the_host() {
        let policy = DestinationPolicy::new(&[], false).unwrap();
        let lookup = scripted(vec![vec!["93.184.216.34", "10.0.0.5"], vec![]]);
        let url = reqwest::Url::parse("https://mixed.example/").unwrap();
        assert_eq!(
            policy.check_url(&lookup, &url).await,
            Err(Refused::Address(AddressClass::Private))
        );
        assert_eq!(
            policy.check_url(&lookup, &url).await,
            Err(Refused::Unresolved)
        );
    }

    #[tokio::test]
    async fn address_literals_are_checked_without_a_lookup() {
        let policy = DestinationPolicy::new(&[], false).unwrap();
        let lookup = scripted(vec![]);
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "http://0.0.0.0:22/",
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(policy.check_url(&lookup, &url).await.is_err(), "{url}");
        }
        let public = reqwest::Url::parse("https://93.184.216.34/").unwrap();
        assert_eq!(policy.check_url(&lookup, &public).await, Ok(()));
    }
}
