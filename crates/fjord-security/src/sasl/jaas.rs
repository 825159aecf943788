//! Kafka's JAAS configuration text (`sasl.jaas.config`), one login module:
//!
//! ```text
//! org.apache.kafka.common.security.plain.PlainLoginModule required
//!     username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";
//! ```
//!
//! Options are `key=value` with the value quoted (`"..."`, backslash escapes) or a bare token,
//! as Java's `StreamTokenizer` reads them in Kafka's `JaasConfig`.

use std::collections::BTreeMap;

/// One parsed login module.
#[derive(Clone, PartialEq, Eq)]
pub struct JaasConfig {
    pub login_module: String,
    /// `required`, `requisite`, `sufficient` or `optional`.
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for JaasConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option values are passwords: show the keys only.
        f.debug_struct("JaasConfig")
            .field("login_module", &self.login_module)
            .field("flag", &self.flag)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Kafka's PLAIN login module.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
/// Kafka's SCRAM login module.
pub const SCRAM_LOGIN_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Eq,
    Semi,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                out.push(Token::Eq);
            }
            ';' => {
                chars.next();
                out.push(Token::Semi);
            }
            '"' | '\'' => {
                let quote = c;
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted value".into()),
                        Some(c) if c == quote => break,
                        Some('\\') => match chars.next() {
                            None => return Err("unterminated quoted value".into()),
                            Some('n') => v.push('\n'),
                            Some('t') => v.push('\t'),
                            Some(c) => v.push(c),
                        },
                        Some(c) => v.push(c),
                    }
                }
                out.push(Token::Quoted(v));
            }
            _ => {
                let mut v = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '=' || c == ';' || c == '"' || c == '\'' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                out.push(Token::Word(v));
            }
        }
    }
    Ok(out)
}

impl JaasConfig {
    /// Parse a `sasl.jaas.config` value; exactly one login module, ended by `;`.
    pub fn parse(s: &str) -> Result<JaasConfig, String> {
        let tokens = tokenize(s)?;
        let mut it = tokens.into_iter();
        let Some(Token::Word(login_module)) = it.next() else {
            return Err("expected a login module class name".into());
        };
        let flag = match it.next() {
            Some(Token::Word(f))
                if ["required", "requisite", "sufficient", "optional"]
                    .contains(&f.to_ascii_lowercase().as_str()) =>
            {
                f.to_ascii_lowercase()
            }
            _ => {
                return Err(format!(
                    "expected a control flag (required, requisite, sufficient or optional) after {login_module}"
                ))
            }
        };
        let mut options = BTreeMap::new();
        loop {
            match it.next() {
                Some(Token::Semi) => break,
                Some(Token::Word(key)) => {
                    if it.next() != Some(Token::Eq) {
                        return Err(format!("expected = after option {key}"));
                    }
                    let value = match it.next() {
                        Some(Token::Word(v)) | Some(Token::Quoted(v)) => v,
                        _ => return Err(format!("expected a value for option {key}")),
                    };
                    options.insert(key, value);
                }
                None => return Err("the login module must end with ;".into()),
                Some(_) => return Err("expected an option name=value or ;".into()),
            }
        }
        if it.next().is_some() {
            return Err("sasl.jaas.config must contain exactly one login module".into());
        }
        Ok(JaasConfig {
            login_module,
            flag,
            options,
        })
    }

    /// PLAIN's users: every `user_<name>="<password>"` option (Kafka's
    /// `PlainServerCallbackHandler`).
    pub fn plain_users(&self) -> BTreeMap<String, String> {
        self.options
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("user_")?.to_string(), v.clone())))
            .filter(|(k, _)| !k.is_empty())
            .collect()
    }

    /// The `username` / `password` this side logs in with (a client, or a broker to its peers).
    pub fn credentials(&self) -> Option<(String, String)> {
        Some((
            self.options.get("username")?.clone(),
            self.options.get("password")?.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_plain_example() {
        let c = JaasConfig::parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required
               username="admin" password="admin-secret"
               user_admin="admin-secret" user_alice='alice "x" secret' user_bob=bob\;pw;"#,
        );
        // A bare token stops at `;`, so the last option above is `bob\` and a stray token.
        assert!(c.is_err());
        let c = JaasConfig::parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required
               username="admin" password="admin-secret"
               user_admin="admin-secret" user_alice='alice "x" secret' user_bob=bob user_q="a\"b";"#,
        )
        .unwrap();
        assert_eq!(c.login_module, PLAIN_LOGIN_MODULE);
        assert_eq!(c.flag, "required");
        assert_eq!(
            c.credentials(),
            Some(("admin".to_string(), "admin-secret".to_string()))
        );
        let users = c.plain_users();
        assert_eq!(users.len(), 4);
        assert_eq!(users["alice"], "alice \"x\" secret");
        assert_eq!(users["bob"], "bob");
        assert_eq!(users["q"], "a\"b");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            ";",
            "Module;",
            "Module maybe;",
            "Module required",
            "Module required a=\"b\"",
            "Module required a=;",
            "Module required a b;",
            "Module required a=\"b;",
            "Module required a=b; Other required;",
            "Module required =b;",
        ] {
            assert!(JaasConfig::parse(bad).is_err(), "{bad}");
        }
        assert!(JaasConfig::parse("M REQUIRED;").is_ok());
    }
}
