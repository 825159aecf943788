//! Which nodes a dev cluster has and where they listen: new node configs from the flags, or
//! the configs an earlier run left in DIR. A node's controller address is part of the cluster
//! id (it is derived from `controller.quorum.voters`), so a restart must reuse the ports it
//! had, also the ones picked with port 0.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::StartArgs;

/// One node: its address, rack and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// `node.id`; node N is `DIR/nodeN.toml` on 127.0.0.N.
    pub id: u32,
    pub rack: Option<String>,
    /// Kafka listener `host:port` (None for a node whose edited config made it controller-only).
    pub kafka: Option<String>,
    /// Controller listener `host:port`.
    pub controller: Option<String>,
    /// Admin HTTP `host:port`.
    pub admin: String,
    pub config: PathBuf,
    pub data: PathBuf,
    /// The node's stdout (its ready line).
    pub out: PathBuf,
    /// The node's stderr (its log).
    pub log: PathBuf,
}

pub const DEFAULT_NODES: u16 = 3;
const DEFAULT_KAFKA_PORT: u16 = 9092;
const DEFAULT_CONTROLLER_PORT: u16 = 9093;
const DEFAULT_ADMIN_PORT: u16 = 9644;

fn config_path(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("node{i}.toml"))
}

/// The nodes to start from `dir` (absolute, existing): the configs of an earlier run when any
/// node has data, else new configs from the flags (written to `DIR/nodeN.toml`).
pub async fn prepare(dir: &Path, args: &StartArgs) -> anyhow::Result<Vec<NodeSpec>> {
    if let Some(existing) = existing(dir).await? {
        let n = existing.len();
        if let Some(want) = args.nodes {
            if usize::from(want) != n {
                anyhow::bail!(
                    "{} holds a {n}-node cluster from an earlier run; start it with --nodes {n}, or use another --dir",
                    dir.display()
                );
            }
        }
        let ignored: Vec<&str> = [
            ("--racks", args.racks.is_some()),
            ("--kafka-port", args.kafka_port.is_some()),
            ("--controller-port", args.controller_port.is_some()),
            ("--admin-port", args.admin_port.is_some()),
            ("--set", !args.set.is_empty()),
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect();
        note!(
            "restarting the {n}-node cluster in {} with its node configs (node1.toml..node{n}.toml){}",
            dir.display(),
            if ignored.is_empty() {
                String::new()
            } else {
                format!("; ignoring {}", ignored.join(", "))
            }
        );
        return Ok(existing);
    }
    let nodes = u32::from(args.nodes.unwrap_or(DEFAULT_NODES));
    let racks = racks(nodes, args.racks.as_deref())?;
    let extra = extra_config(&args.set)?;
    let mut ports = Ports::default();
    let mut specs = Vec::new();
    for i in 1..=nodes {
        let ip = format!("127.0.0.{i}");
        let kafka = ports.pick(&ip, args.kafka_port, DEFAULT_KAFKA_PORT).await?;
        let controller = ports
            .pick(&ip, args.controller_port, DEFAULT_CONTROLLER_PORT)
            .await?;
        let admin = ports.pick(&ip, args.admin_port, DEFAULT_ADMIN_PORT).await?;
        specs.push(NodeSpec {
            id: i,
            rack: Some(racks[i as usize - 1].clone()),
            kafka: Some(format!("{ip}:{kafka}")),
            controller: Some(format!("{ip}:{controller}")),
            admin: format!("{ip}:{admin}"),
            config: config_path(dir, i),
            data: dir.join(format!("node{i}")).join("data"),
            out: dir.join(format!("node{i}.out")),
            log: dir.join(format!("node{i}.log")),
        });
    }
    drop(ports);
    let voters = specs
        .iter()
        .map(|s| format!("{}@{}", s.id, s.controller.as_deref().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    for s in &specs {
        let text = node_config(s, &voters) + &extra;
        // The same parser and checks as `fjord server`: a bad rack name fails here, once.
        let flat = fjord_broker::config::flatten_toml(&text)
            .map_err(|e| anyhow::anyhow!("node {} config: {e}", s.id))?;
        fjord_broker::BrokerConfig::from_props(flat)
            .map_err(|e| anyhow::anyhow!("node {} config: {e}", s.id))?;
        tokio::fs::create_dir_all(&s.data)
            .await
            .with_context(|| format!("creating {}", s.data.display()))?;
        tokio::fs::write(&s.config, text)
            .await
            .with_context(|| format!("writing {}", s.config.display()))?;
    }
    Ok(specs)
}

/// Port 0 picks a free port: every probe socket is held until all ports are picked, so no
/// two listeners get the same one, and released before the nodes start.
#[derive(Default)]
struct Ports {
    held: Vec<tokio::net::TcpListener>,
}

impl Ports {
    async fn pick(&mut self, ip: &str, flag: Option<u16>, default: u16) -> anyhow::Result<u16> {
        match flag.unwrap_or(default) {
            0 => {
                let l = tokio::net::TcpListener::bind((ip, 0))
                    .await
                    .with_context(|| format!("picking a free port on {ip}"))?;
                let port = l.local_addr()?.port();
                self.held.push(l);
                Ok(port)
            }
            port => Ok(port),
        }
    }
}

/// Rack of node 1..=n: `--racks` round-robin, or a, b, c, ... (one per node).
fn racks(n: u32, given: Option<&[String]>) -> anyhow::Result<Vec<String>> {
    match given {
        Some(list) => {
            let list: Vec<&str> = list.iter().map(|r| r.trim()).collect();
            if list.is_empty() || list.iter().any(|r| r.is_empty()) {
                anyhow::bail!("--racks needs non-empty names separated by commas, e.g. a,b,c");
            }
            Ok((0..n as usize)
                .map(|i| list[i % list.len()].to_string())
                .collect())
        }
        None => Ok((1..=n).map(default_rack).collect()),
    }
}

/// a, b, ..., z, aa, ab, ... (spreadsheet column names).
fn default_rack(mut i: u32) -> String {
    let mut name = Vec::new();
    while i > 0 {
        i -= 1;
        name.push(b'a' + (i % 26) as u8);
        i /= 26;
    }
    name.reverse();
    String::from_utf8(name).expect("ASCII letters")
}

/// `--set KEY=VALUE` flags as TOML lines for every node's config (values as strings, which
/// the broker's config parser reads like any other value).
fn extra_config(set: &[String]) -> anyhow::Result<String> {
    let mut out = String::new();
    for kv in set {
        let Some((k, v)) = kv.split_once('=') else {
            anyhow::bail!("--set {kv:?}: expected KEY=VALUE");
        };
        let k = k.trim();
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            anyhow::bail!("--set {kv:?}: a config key is letters, digits, '.', '_' and '-'");
        }
        out.push_str(&format!("{k} = {}\n", toml_string(v.trim())));
    }
    Ok(out)
}

/// A TOML basic string (JSON's string escapes are valid TOML).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn node_config(s: &NodeSpec, voters: &str) -> String {
    let mut listeners = Vec::new();
    if let Some(k) = &s.kafka {
        listeners.push(format!("PLAINTEXT://{k}"));
    }
    if let Some(c) = &s.controller {
        listeners.push(format!("CONTROLLER://{c}"));
    }
    format!(
        "# Node {id} of a local cluster, written by `fjord dev cluster`. Restarting the cluster from\n\
         # this directory reuses this file (edits stay); the controller address must not change.\n\
         node.id = {id}\n\
         process.roles = \"broker,controller\"\n\
         broker.rack = {rack}\n\
         listeners = {listeners}\n\
         controller.quorum.voters = {voters}\n\
         log.dirs = {data}\n\
         admin.listener = {admin}\n",
        id = s.id,
        rack = toml_string(s.rack.as_deref().unwrap_or_default()),
        listeners = toml_string(&listeners.join(",")),
        voters = toml_string(voters),
        data = toml_string(&s.data.to_string_lossy()),
        admin = toml_string(&s.admin),
    )
}

/// The nodes of an earlier run: `DIR/node1.toml`, `node2.toml`, ... when at least one of them
/// has data (`meta.properties`); None when DIR has no cluster that ever started.
async fn existing(dir: &Path) -> anyhow::Result<Option<Vec<NodeSpec>>> {
    let mut found: Vec<(u32, Result<NodeSpec, String>)> = Vec::new();
    let mut i = 1;
    while i <= 254 && tokio::fs::try_exists(config_path(dir, i)).await? {
        let path = config_path(dir, i);
        let text = tokio::fs::read_to_string(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let dir = dir.to_path_buf();
        // Parsing may resolve host names (connection limit overrides): not on a runtime worker.
        let spec = tokio::task::spawn_blocking(move || parse_node(&dir, i, &text)).await?;
        found.push((i, spec));
        i += 1;
    }
    let mut has_data = false;
    for (i, spec) in &found {
        let data = match spec {
            Ok(s) => s.data.clone(),
            Err(_) => dir.join(format!("node{i}")).join("data"),
        };
        has_data |= tokio::fs::try_exists(data.join("meta.properties")).await?;
    }
    if !has_data {
        return Ok(None);
    }
    let mut specs = Vec::new();
    for (i, spec) in found {
        specs.push(spec.map_err(|e| anyhow::anyhow!("{}: {e}", config_path(dir, i).display()))?);
    }
    Ok(Some(specs))
}

fn parse_node(dir: &Path, i: u32, text: &str) -> Result<NodeSpec, String> {
    let flat = fjord_broker::config::flatten_toml(text)?;
    let cfg = fjord_broker::BrokerConfig::from_props(flat)?;
    if cfg.node_id != i as i32 {
        return Err(format!(
            "node.id is {}, but fjord dev cluster runs node{i}.toml as node {i}",
            cfg.node_id
        ));
    }
    let host = |h: &str| {
        if h.is_empty() {
            format!("127.0.0.{i}")
        } else {
            h.to_string()
        }
    };
    Ok(NodeSpec {
        id: i,
        rack: cfg.rack.clone(),
        kafka: cfg
            .cluster
            .roles
            .broker
            .then(|| format!("{}:{}", host(&cfg.listener.host), cfg.listener.port)),
        controller: cfg
            .cluster
            .controller_listener
            .as_ref()
            .map(|l| format!("{}:{}", host(&l.host), l.port)),
        admin: cfg.admin_listener.clone(),
        config: config_path(dir, i),
        data: cfg.log_dir.clone(),
        out: dir.join(format!("node{i}.out")),
        log: dir.join(format!("node{i}.log")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racks_default_and_round_robin() {
        assert_eq!(racks(3, None).unwrap(), ["a", "b", "c"]);
        assert_eq!(default_rack(26), "z");
        assert_eq!(default_rack(27), "aa");
        let given = vec!["x".to_string(), "y".to_string()];
        assert_eq!(racks(5, Some(&given)).unwrap(), ["x", "y", "x", "y", "x"]);
        assert!(racks(2, Some(&["a".to_string(), " ".to_string()])).is_err());
    }

    #[test]
    fn set_flags_become_config_lines() {
        let set = vec![
            "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector"
                .to_string(),
            "log.retention.ms = 1000".to_string(),
        ];
        let extra = extra_config(&set).unwrap();
        let flat =
            fjord_broker::config::flatten_toml(&format!("log.dirs = \"/d\"\n{extra}")).unwrap();
        assert_eq!(flat["log.retention.ms"], "1000");
        assert!(flat["replica.selector.class"].ends_with("RackAwareReplicaSelector"));
        assert!(extra_config(&["novalue".into()]).is_err());
        assert!(extra_config(&["bad key=1".into()]).is_err());
    }

    #[test]
    fn node_config_is_valid_and_reads_back() {
        let dir = Path::new("/tmp/dev \"cluster\"");
        let spec = NodeSpec {
            id: 2,
            rack: Some("b".into()),
            kafka: Some("127.0.0.2:9092".into()),
            controller: Some("127.0.0.2:9093".into()),
            admin: "127.0.0.2:9644".into(),
            config: config_path(dir, 2),
            data: dir.join("node2").join("data"),
            out: dir.join("node2.out"),
            log: dir.join("node2.log"),
        };
        let text = node_config(&spec, "1@127.0.0.1:9093,2@127.0.0.2:9093,3@127.0.0.3:9093");
        assert_eq!(parse_node(dir, 2, &text).unwrap(), spec);
        assert!(parse_node(dir, 3, &text)
            .unwrap_err()
            .contains("node.id is 2"));
    }
}
