//! Manual pages and shell completions generated from the command-line
//! definition, so they can never disagree with `--help`.
//!
//! Two hidden subcommands write them; `scripts/build-debs.sh` runs them with
//! the freshly built binary and the .deb installs the result:
//!
//! - `wardlink generate-man DIR`: `wardlink.1` and one page per subcommand
//!   (`wardlink-run.1`, `wardlink-quarantine-list.1`, ...), roff, section 1;
//! - `wardlink generate-completions DIR`: `wardlink.bash` (bash-completion)
//!   and `_wardlink` (zsh).
//!
//! Hidden subcommands get neither a page nor a completion.

use std::path::{Path, PathBuf};

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
    /// binary `name`, version `version`); returns the paths written.
    ///
    /// # Errors
    /// The directory or a file cannot be written.
    pub fn run(
        &self,
        cmd: &clap::Command,
        name: &'static str,
        version: &'static str,
    ) -> std::io::Result<Vec<PathBuf>> {
        let cmd = without_hidden(cmd, name, version);
        match self {
            CliDocs::GenerateMan { dir } => write_man(cmd, dir),
            CliDocs::GenerateCompletions { dir } => write_completions(cmd, dir),
        }
    }
}

/// `cmd` without its hidden subcommands: clap_mangen leaves them out by
/// itself, clap_complete would offer them.
pub fn without_hidden(
    cmd: &clap::Command,
    name: &'static str,
    version: &'static str,
) -> clap::Command {
    let mut out = clap::Command::new(name)
        .version(version)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        out = out.long_about(about.clone());
    }
    out
}

/// One roff page for `cmd` and one for each visible subcommand, recursively.
pub fn write_man(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
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

/// The bash and zsh completion scripts for `cmd`.
pub fn write_completions(mut cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_string();
    [Shell::Bash, Shell::Zsh]
        .into_iter()
        .map(|shell| clap_complete::generate_to(shell, &mut cmd, &name, dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    #[test]
    fn man_pages_cover_the_visible_subcommands_only() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let cmd = without_hidden(&Cli::command(), "wardlink", "1.2.3");
        let pages = write_man(cmd, dir.path())?;
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for expected in [
            "wardlink.1",
            "wardlink-run.1",
            "wardlink-check-config.1",
            "wardlink-quarantine-release.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("generate")),
            "hidden subcommands get no page: {names:?}"
        );
        let main = std::fs::read_to_string(dir.path().join("wardlink.1"))?;
        assert!(main.starts_with(".ie"), "roff: {main:.80}");
        assert!(main.contains("check\\-config"), "{main}");
        assert!(
            main.contains("wardlink 1.2.3"),
            "version in the title: {main:.200}"
        );
        Ok(())
    }

    #[test]
    fn completions_for_bash_and_zsh_name_the_subcommands() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let cmd = without_hidden(&Cli::command(), "wardlink", "1.2.3");
        let files = write_completions(cmd, dir.path())?;
        assert_eq!(files.len(), 2, "{files:?}");
        let bash = std::fs::read_to_string(dir.path().join("wardlink.bash"))?;
        let zsh = std::fs::read_to_string(dir.path().join("_wardlink"))?;
        for text in [&bash, &zsh] {
            assert!(text.contains("check-config"));
            assert!(!text.contains("generate-man"), "hidden stays hidden");
        }
        assert!(zsh.starts_with("#compdef wardlink"), "{zsh:.60}");
        Ok(())
    }
}
