//! The command line every bindery app understands.

use std::path::PathBuf;

use clap::Parser;

/// Options common to every bindery application.
#[derive(Debug, Parser)]
#[command(about = "A bindery message-driven application", long_about = None)]
pub(crate) struct Cli {
    /// The configuration file (TOML, or YAML by extension). Default:
    /// $BINDERY_CONFIG, else ./bindery.toml if present, else the app's
    /// built-in configuration.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// Validate the configuration and print the wiring without connecting.
    #[arg(long)]
    pub(crate) check: bool,

    /// Move the dead letters of an input binding back to its group and exit.
    #[arg(long, value_name = "BINDING", conflicts_with = "check")]
    pub(crate) redrive: Option<String>,

    /// With --redrive: move at most this many.
    #[arg(long, value_name = "N", requires = "redrive")]
    pub(crate) limit: Option<usize>,
}
