//! Manual pages and shell completions generated from `wardlink-collector`'s
//! command-line definition (the same scheme as the gateway's
//! `wardlink::cli_docs`): the hidden subcommands `generate-man DIR`
//! (`wardlink-collector.1` and one page per visible subcommand) and
//! `generate-completions DIR` (`wardlink-collector.bash`, `_wardlink-collector`).
//! `scripts/build-debs.sh` runs them and the .deb installs the files.

use std::path::PathBuf;

use clap::Subcommand;
use clap_complete::Shell;

/// The hidden subcommands that write the generated docs.
#[derive(Debug, Subcommand)]
pub enum CliDocs {
    /// Write the manual pages into DIR (created if missing).
    #[command(hide = true)]
    GenerateMan {
        /// The output directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write the bash and zsh completions into DIR (created if missing).
    #[command(hide = true)]
    GenerateCompletions {
        /// The output directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

impl CliDocs {
    /// Write the files for `cmd` (the whole command-line definition of the
    /// binary `name`, version `version`); returns the paths written. Hidden
    /// subcommands get neither a page nor a completion.
    ///
    /// # Errors
    /// The directory or a file cannot be written.
    pub fn run(
        &self,
        cmd: &clap::Command,
        name: &'static str,
        version: &'static str,
    ) -> std::io::Result<Vec<PathBuf>> {
        let mut visible = clap::Command::new(name)
            .version(version)
            .args(cmd.get_arguments().cloned())
            .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        if let Some(about) = cmd.get_about() {
            visible = visible.about(about.clone());
        }
        let mut cmd = visible;
        match self {
            CliDocs::GenerateMan { dir } => {
                std::fs::create_dir_all(dir)?;
                clap_mangen::generate_to(cmd, dir)?;
                let mut pages = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "1") {
                        pages.push(path);
                    }
                }
                pages.sort();
                Ok(pages)
            }
            CliDocs::GenerateCompletions { dir } => {
                std::fs::create_dir_all(dir)?;
                [Shell::Bash, Shell::Zsh]
                    .into_iter()
                    .map(|shell| clap_complete::generate_to(shell, &mut cmd, name, dir))
                    .collect()
            }
        }
    }
}
