//! `fjord cluster ...`

use clap::Subcommand;

use crate::args::Connect;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller and brokers (DescribeCluster, Metadata).
    Info,
}

pub async fn run(connect: &Connect, command: ClusterCommand) -> anyhow::Result<()> {
    let client = connect.client().await?;
    match command {
        ClusterCommand::Info => {
            let md = client.metadata(Some(&[])).await?;
            // DescribeCluster adds fencing state; fall back to Metadata if unsupported.
            let (cluster_id, controller, mut brokers) = match client.describe_cluster().await {
                Ok(d) => (Some(d.cluster_id), d.controller_id, d.brokers),
                Err(fjord_client::Error::UnsupportedApi { .. }) => {
                    (md.cluster_id.clone(), md.controller_id, md.brokers.clone())
                }
                Err(e) => return Err(e.into()),
            };
            brokers.sort_by_key(|b| b.node_id);
            println!("cluster id: {}", cluster_id.as_deref().unwrap_or("-"));
            println!("controller: {controller}");
            println!("brokers:");
            for b in brokers {
                let mut line = format!(
                    "  {}  {}  rack={}",
                    b.node_id,
                    b.addr(),
                    b.rack.as_deref().unwrap_or("-")
                );
                if b.is_fenced {
                    line.push_str("  (fenced)");
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}
