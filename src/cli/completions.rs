//! `pipeline completions SHELL`: prints the shell completion script for bash, zsh or fish, generated
//! from the same argument definitions the parser uses (so it never lists a flag that does not exist).

use anyhow::Result;
use clap::CommandFactory;
use std::process::ExitCode;

pub const AFTER_HELP: &str = "\
Examples:
  pipeline completions bash > ~/.local/share/bash-completion/completions/pipeline
  pipeline completions zsh > \"${fpath[1]}/_pipeline\"
  pipeline completions fish > ~/.config/fish/completions/pipeline.fish
  source <(pipeline completions bash)          for the current shell only";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "pipeline", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
