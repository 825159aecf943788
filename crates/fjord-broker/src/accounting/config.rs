//! The accounting's settings and the two ways a client names its rack without Kafka's
//! `client.rack`: a `fjord_az=<rack>` tag in its `client.id`, or its address in a range of
//! `client.rack.cidrs`. Pure parsing, no I/O.

use std::net::IpAddr;

/// The longest rack name kept as a label; longer names are counted under
/// [`super::traffic::OVERFLOW_RACK`].
pub const MAX_RACK_LEN: usize = 64;

/// The tag in `client.id` that names the client's rack (`myapp,fjord_az=b`).
pub const CLIENT_ID_TAG: &str = "fjord_az";

/// `traffic.accounting.enable` and `client.rack.cidrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountingConfig {
    /// `traffic.accounting.enable` (default true): count traffic by rack and usage per topic
    /// and client. Off, the connections and handlers skip all of it (for benchmarks).
    pub enabled: bool,
    /// `client.rack.cidrs`: the rack of clients by address, for clients that say nothing.
    pub rack_cidrs: RackCidrs,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        AccountingConfig {
            enabled: true,
            rack_cidrs: RackCidrs::default(),
        }
    }
}

impl AccountingConfig {
    /// From the values of `traffic.accounting.enable` and `client.rack.cidrs`; an error is one
    /// line naming the key, the value and what is allowed.
    pub fn parse(enable: &str, cidrs: &str) -> Result<AccountingConfig, String> {
        let enabled = match enable.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(format!(
                "invalid value \"{enable}\" for traffic.accounting.enable: expected true or false"
            ))
            }
        };
        let rack_cidrs = RackCidrs::parse(cidrs).map_err(|why| {
            format!(
                "invalid value \"{cidrs}\" for client.rack.cidrs: {why} (expected RACK=ADDRESS/PREFIX,..., e.g. a=10.0.0.0/16,b=10.1.0.0/16)"
            )
        })?;
        Ok(AccountingConfig {
            enabled,
            rack_cidrs,
        })
    }
}

/// One address range of `client.rack.cidrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RackCidr {
    rack: String,
    /// The network address, host bits cleared.
    net: IpAddr,
    prefix: u8,
}

/// Address ranges mapped to racks; the longest matching prefix wins (the first listed among
/// equals).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RackCidrs {
    ranges: Vec<RackCidr>,
}

impl RackCidrs {
    /// `RACK=ADDRESS[/PREFIX],...` (IPv4 or IPv6; a bare address is one host). Host bits under
    /// the prefix are ignored (`10.0.0.1/16` is `10.0.0.0/16`).
    pub fn parse(s: &str) -> Result<RackCidrs, String> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (rack, range) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} has no RACK="))?;
            let rack = rack.trim();
            if !valid_rack(rack) {
                return Err(format!(
                    "rack {rack:?} must be 1 to {MAX_RACK_LEN} printable characters without spaces"
                ));
            }
            let range = range.trim();
            let (addr, prefix) = match range.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (range, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{addr:?} is not an IP address"))?;
            let ip = canonical(ip);
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(format!("prefix {p:?} of {range:?} is not in 0..={max}")),
                },
            };
            ranges.push(RackCidr {
                rack: rack.to_string(),
                net: mask(ip, prefix),
                prefix,
            });
        }
        Ok(RackCidrs { ranges })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The rack of a client at `ip`, if a range covers it.
    pub fn rack_of(&self, ip: IpAddr) -> Option<&str> {
        let ip = canonical(ip);
        let mut best: Option<&RackCidr> = None;
        for r in &self.ranges {
            if r.net.is_ipv4() == ip.is_ipv4()
                && mask(ip, r.prefix) == r.net
                && best.is_none_or(|b| r.prefix > b.prefix)
            {
                best = Some(r);
            }
        }
        best.map(|r| r.rack.as_str())
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack listener sees) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// A rack name that may become a metric label: 1 to [`MAX_RACK_LEN`] printable ASCII
/// characters, no spaces (AZ names such as `us-east-1a` or `use1-az1`).
pub fn valid_rack(rack: &str) -> bool {
    !rack.is_empty() && rack.len() <= MAX_RACK_LEN && rack.bytes().all(|c| c.is_ascii_graphic())
}

/// The rack a `client.id` names with a `fjord_az=<rack>` tag: anywhere in the id, the tags
/// separated by `,`, `;` or whitespace (`fjord_az=b`, `myapp,fjord_az=b`, `myapp; fjord_az=b`).
/// The tag name is matched without regard to case; the first tag counts. `Some("")` is never
/// returned; a value that is not a valid rack is returned as it is, for the caller to count as
/// an overflow.
pub fn client_id_rack(client_id: &str) -> Option<&str> {
    client_id
        .split([',', ';', ' ', '\t'])
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(CLIENT_ID_TAG))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_tag_anywhere() {
        assert_eq!(client_id_rack("fjord_az=b"), Some("b"));
        assert_eq!(client_id_rack("myapp,fjord_az=b"), Some("b"));
        assert_eq!(
            client_id_rack("fjord_az=us-east-1a,myapp"),
            Some("us-east-1a")
        );
        assert_eq!(client_id_rack("myapp; fjord_az=c"), Some("c"));
        assert_eq!(client_id_rack("myapp fjord_az=c other=1"), Some("c"));
        assert_eq!(client_id_rack("FJORD_AZ=a"), Some("a"));
        assert_eq!(client_id_rack("x,fjord_az=a,fjord_az=b"), Some("a"));
        assert_eq!(client_id_rack("myapp"), None);
        assert_eq!(client_id_rack(""), None);
        assert_eq!(client_id_rack("fjord_az="), None);
        assert_eq!(client_id_rack("fjord_az"), None);
        assert_eq!(client_id_rack("not_fjord_az=b"), None);
        assert_eq!(client_id_rack("rdkafka"), None);
    }

    #[test]
    fn cidrs_longest_prefix_wins() {
        let c =
            RackCidrs::parse("a=10.0.0.0/16, b=10.1.0.0/16,c=10.1.2.0/24,lo=127.0.0.0/24").unwrap();
        let rack = |s: &str| c.rack_of(s.parse().unwrap());
        assert_eq!(rack("10.0.3.4"), Some("a"));
        assert_eq!(rack("10.1.3.4"), Some("b"));
        assert_eq!(rack("10.1.2.200"), Some("c"));
        assert_eq!(rack("127.0.0.7"), Some("lo"));
        assert_eq!(rack("::ffff:10.0.0.9"), Some("a"));
        assert_eq!(rack("10.2.0.1"), None);
        assert_eq!(rack("::1"), None);
    }

    #[test]
    fn cidrs_hosts_ipv6_and_empty() {
        let c = RackCidrs::parse("x=127.0.0.2,y=fd00::/8,z=0.0.0.0/0").unwrap();
        let rack = |s: &str| c.rack_of(s.parse().unwrap());
        assert_eq!(rack("127.0.0.2"), Some("x"));
        assert_eq!(rack("127.0.0.3"), Some("z"));
        assert_eq!(rack("fd12::1"), Some("y"));
        assert_eq!(rack("fe80::1"), None);
        // Host bits are ignored.
        let c = RackCidrs::parse("a=10.0.0.1/16").unwrap();
        assert_eq!(c.rack_of("10.0.200.1".parse().unwrap()), Some("a"));
        assert!(RackCidrs::parse("").unwrap().is_empty());
        assert!(RackCidrs::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn bad_cidrs_are_one_line_errors_naming_the_key() {
        for bad in [
            "10.0.0.0/16",
            "a=10.0.0.0/33",
            "a=fd00::/129",
            "a=10.0.0.0/x",
            "a=10.0.0",
            "a=host.example.com/16",
            "=10.0.0.0/16",
            "a b=10.0.0.0/16",
        ] {
            let e = AccountingConfig::parse("true", bad).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid value \"{bad}\" for client.rack.cidrs: ")),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        let long = format!("{}=10.0.0.0/8", "r".repeat(MAX_RACK_LEN + 1));
        assert!(AccountingConfig::parse("true", &long).is_err());
    }

    #[test]
    fn enable_flag() {
        assert!(AccountingConfig::parse("true", "").unwrap().enabled);
        assert!(!AccountingConfig::parse("FALSE", "").unwrap().enabled);
        let e = AccountingConfig::parse("yes", "").unwrap_err();
        assert_eq!(
            e,
            "invalid value \"yes\" for traffic.accounting.enable: expected true or false"
        );
    }

    #[test]
    fn rack_names() {
        assert!(valid_rack("us-east-1a"));
        assert!(valid_rack("use1-az1"));
        assert!(!valid_rack(""));
        assert!(!valid_rack("a b"));
        assert!(!valid_rack("é"));
        assert!(!valid_rack(&"a".repeat(MAX_RACK_LEN + 1)));
    }
}
