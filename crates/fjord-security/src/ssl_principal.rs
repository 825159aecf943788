//! `ssl.principal.mapping.rules`: from a client certificate's distinguished name (RFC 2253,
//! `CN=alice,OU=eng,O=Acme`) to the user name of its principal, with Kafka's rule language.
//!
//! The value is a list of rules, separated by commas or newlines, tried in order:
//!
//! - `DEFAULT`: the whole DN is the name;
//! - `RULE:pattern/replacement/` with an optional `L` or `U` after the last slash (lower or
//!   upper case the result): when `pattern` (a regex) matches the *whole* DN, the name is the
//!   DN with the matches replaced by `replacement` (`$1` for a group). A `/` inside the
//!   pattern or replacement is written `\/`.
//!
//! A DN that no rule matches has no principal: the connection is refused (Kafka fails the
//! authentication the same way). The default value, `DEFAULT`, keeps the DN.

use regex::Regex;

/// The default of `ssl.principal.mapping.rules`.
pub const DEFAULT_RULES: &str = "DEFAULT";

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        /// Anchored at both ends: Java's `Matcher.matches()`.
        whole: Regex,
        /// Unanchored, for the replacement (Java's `replaceAll`).
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// Parsed `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub struct SslPrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for SslPrincipalMapper {
    fn default() -> Self {
        SslPrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

impl SslPrincipalMapper {
    /// Parse the config value; the error names the rule that does not parse.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut rest = value.trim();
        while !rest.is_empty() {
            let (rule, after) = parse_rule(rest)?;
            rules.push(rule);
            let after = after.trim_start_matches([' ', '\t', '\r']);
            rest = match after.chars().next() {
                None => "",
                Some(',' | '\n') => after[1..].trim_start(),
                Some(_) => {
                    return Err(format!(
                        "invalid ssl.principal.mapping.rules: unexpected {after:?} after a rule"
                    ))
                }
            };
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(SslPrincipalMapper { rules })
    }

    /// The user name for `dn`, or `None` when no rule applies.
    pub fn name(&self, dn: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Replace {
                    whole,
                    pattern,
                    replacement,
                    case,
                } => {
                    if !whole.is_match(dn) {
                        continue;
                    }
                    let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                    return Some(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        None
    }
}

/// One rule at the start of `s`, and what follows it.
fn parse_rule(s: &str) -> Result<(Rule, &str), String> {
    if let Some(after) = s.strip_prefix("DEFAULT") {
        return Ok((Rule::Default, after));
    }
    let Some(body) = s.strip_prefix("RULE:") else {
        let end = s.find([',', '\n']).unwrap_or(s.len());
        return Err(format!(
            "invalid ssl.principal.mapping.rules: {:?} is neither DEFAULT nor RULE:pattern/replacement/[LU]",
            &s[..end]
        ));
    };
    let (pattern, after) = until_slash(body).ok_or_else(|| {
        format!("invalid ssl.principal.mapping.rules: {s:?} has no '/' after the pattern")
    })?;
    let (replacement, after) = until_slash(after).ok_or_else(|| {
        format!("invalid ssl.principal.mapping.rules: {s:?} has no '/' after the replacement")
    })?;
    let (case, after) = match after.chars().next() {
        Some('L') => (Case::Lower, &after[1..]),
        Some('U') => (Case::Upper, &after[1..]),
        _ => (Case::Keep, after),
    };
    let bad =
        |e: regex::Error| format!("invalid ssl.principal.mapping.rules pattern {pattern:?}: {e}");
    let whole = Regex::new(&format!("^(?:{pattern})$")).map_err(bad)?;
    let pattern_re = Regex::new(&pattern).map_err(bad)?;
    Ok((
        Rule::Replace {
            whole,
            pattern: pattern_re,
            replacement: java_replacement(&replacement),
            case,
        },
        after,
    ))
}

/// The text up to the first unescaped '/', with `\/` unescaped, and what follows the '/'.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if s[i + 1..].starts_with('/') => {
                out.push('/');
                chars.next();
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's replacement syntax (`$1`, `\$` for a literal dollar) in the regex crate's (`${1}`,
/// `$$`): `$1a` means group 1 then `a` in Java but the group named `1a` in the regex crate.
fn java_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{digits}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A DER certificate's subject as Java's `X500Principal.getName()` prints it (RFC 2253):
/// the most specific RDN first (`CN=alice,OU=eng,O=Acme,C=US`), the keywords of RFC 2253
/// (CN, C, L, ST, O, OU, STREET, DC, UID) and other attributes as `oid=#hex` of their DER
/// value, special characters escaped with '\\'. This is the DN that
/// `ssl.principal.mapping.rules` maps, so operators' rules written for Kafka match the same.
pub fn certificate_subject(der: &[u8]) -> Result<String, String> {
    use x509_parser::asn1_rs::ToDer;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let keyword = rfc2253_keyword(&oid);
            match (keyword, atv.as_str()) {
                (Some(k), Ok(v)) => parts.push(format!("{k}={}", escape_rfc2253(v))),
                _ => {
                    let der = atv
                        .attr_value()
                        .to_der_vec()
                        .map_err(|e| format!("a subject attribute does not encode: {e}"))?;
                    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                    parts.push(format!("{}=#{hex}", keyword.unwrap_or(&oid)));
                }
            }
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

fn rfc2253_keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 section 2.4: `,+"\<>;` escaped anywhere, '#' first and spaces at the ends.
fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rules: &str, dn: &str) -> Option<String> {
        SslPrincipalMapper::parse(rules).unwrap().name(dn)
    }

    #[test]
    fn default_keeps_the_dn() {
        let dn = "CN=alice,OU=eng,O=Acme,C=US";
        assert_eq!(map("DEFAULT", dn).as_deref(), Some(dn));
        assert_eq!(SslPrincipalMapper::default().name(dn).as_deref(), Some(dn));
        assert_eq!(map("", dn).as_deref(), Some(dn));
    }

    #[test]
    fn rules_apply_in_order_to_whole_matches() {
        let rules = "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,DEFAULT";
        assert_eq!(
            map(rules, "CN=kafka-svc,OU=ServiceUsers,O=Acme").as_deref(),
            Some("kafka-svc")
        );
        assert_eq!(
            map(
                rules,
                "CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Santa Clara,ST=CA,C=US"
            )
            .as_deref(),
            Some("duke@javasoft")
        );
        assert_eq!(
            map(rules, "OU=x,CN=Bob.Smith,O=y").as_deref(),
            Some("bob.smith")
        );
        assert_eq!(map(rules, "O=nobody").as_deref(), Some("O=nobody"));
    }

    #[test]
    fn no_matching_rule_means_no_principal() {
        assert_eq!(map("RULE:^CN=(.*)$/$1/", "OU=x,CN=y"), None);
        // A partial match is not a match (Java's matches()).
        assert_eq!(map("RULE:CN=([a-z]+)/$1/U", "CN=abc,O=x"), None);
        assert_eq!(
            map("RULE:CN=([a-z]+),.*/$1/U", "CN=abc,O=x").as_deref(),
            Some("ABC")
        );
    }

    #[test]
    fn escaped_slashes_newlines_and_dollars() {
        let rules = "RULE:^CN=([^,]*),O=a\\/b$/$1\\/x/\n  DEFAULT";
        assert_eq!(map(rules, "CN=u,O=a/b").as_deref(), Some("u/x"));
        assert_eq!(map(rules, "CN=u,O=c").as_deref(), Some("CN=u,O=c"));
        assert_eq!(
            map("RULE:^CN=(.*)$/$1a\\$/", "CN=z").as_deref(),
            Some("za$")
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        for bad in [
            "RULE:^CN=(.*)$",
            "RULE:^CN=(.*)$/$1",
            "NOPE",
            "RULE:^CN=((/$1/",
            "DEFAULT junk",
        ] {
            let e = SslPrincipalMapper::parse(bad).unwrap_err();
            assert!(e.contains("ssl.principal.mapping.rules"), "{bad}: {e}");
        }
    }

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subjects_print_as_java_does() {
        use rcgen::DnType;
        let der = cert_with(&[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Acme, Inc."),
            (DnType::OrganizationalUnitName, "eng"),
            (DnType::CommonName, "alice"),
        ]);
        assert_eq!(
            certificate_subject(&der).unwrap(),
            "CN=alice,OU=eng,O=Acme\\, Inc.,C=US"
        );
        // emailAddress has no RFC 2253 keyword: Java prints its OID and DER in hex.
        let der = cert_with(&[
            (DnType::CommonName, " #x"),
            (
                DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                "a@b",
            ),
        ]);
        let dn = certificate_subject(&der).unwrap();
        assert!(dn.starts_with("1.2.840.113549.1.9.1=#"), "{dn}");
        assert!(dn.ends_with(",CN=\\ #x"), "{dn}");
        assert!(certificate_subject(b"not a certificate").is_err());
    }
}
