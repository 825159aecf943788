//! `fjord completions SHELL` and `fjord man`: shell completions and man pages generated from the
//! same clap definitions that parse the arguments, so they cannot drift from the CLI.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `fjord.1` and one page per subcommand (`fjord-topic-create.1`, ...) into DIR
    /// instead of printing `fjord.1` on stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Print the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = crate::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "fjord", &mut buf);
    write_stdout(&buf)
}

/// Print `fjord.1`, or write every page into `--dir`.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let cmd = crate::Cli::command();
    match args.dir {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            write_stdout(&buf)
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut cmd = cmd;
            cmd.build();
            let written = write_pages(&cmd, "fjord", &dir)?;
            eprintln!("wrote {written} man pages to {}", dir.display());
            Ok(())
        }
    }
}

/// Write the page of `cmd` (named `name`) and of every subcommand below it; returns the count.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let page = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    let mut count = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        count += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(count)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        crate::output::stdout_failed(e);
    }
    Ok(())
}
