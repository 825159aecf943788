//! Broker configuration (placeholder, being written).
#[derive(Debug, Clone)]
pub struct BrokerConfig {}
impl BrokerConfig {
    /// Load from an optional TOML file, `FJORD_*` env vars and `key=value` overrides (flags),
    /// in rising precedence.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &[(String, String)],
    ) -> Result<BrokerConfig, String> {
        let _ = (file, overrides);
        Ok(BrokerConfig {})
    }
}
