//! The `shoal` command. Each subcommand lives in `cli/`; this file parses
//! arguments, runs the command, and turns errors into a message and an
//! exit status (0 success, 1 a check found problems, 2 an error).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[macro_use]
mod cli;

/// shoal: P2P distribution of very large files, verified end to end.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a .torrent from a file or a directory.
    Create(cli::create::CreateArgs),
    /// Print what a .torrent or a magnet link describes.
    Show(cli::show::ShowArgs),
    /// Check data on disk against a .torrent's piece hashes.
    Verify(cli::verify::VerifyArgs),
    /// Share a file or directory until interrupted (makes the torrent).
    Seed(cli::seed::SeedArgs),
    /// Download a torrent, verify it and exit.
    Fetch(cli::fetch::FetchArgs),
    /// Run the node daemon (add --tracker for the tracker role).
    Node(cli::node::NodeArgs),
    /// Run a node with only the tracker role.
    Tracker(cli::node::NodeArgs),
    /// Add a torrent (file, magnet or path on the node) to a running node.
    Add(cli::add::AddArgs),
    /// List a running node's torrents.
    Ls(cli::ls::LsArgs),
    /// Remove a torrent from a running node.
    Rm(cli::rm::RmArgs),
    /// Show a running node, or one torrent in detail.
    Status(cli::status::StatusArgs),
    /// Distribute a generated file among nodes on this machine and compare
    /// the time with the fluid lower bound.
    Demo(cli::demo::DemoArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the default config, with every option explained.
    Example,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if matches!(
        args.command,
        Command::Seed(_)
            | Command::Fetch(_)
            | Command::Node(_)
            | Command::Tracker(_)
            | Command::Demo(_)
    ) {
        // First thing, so that its warm-up of the TLS library overlaps the
        // rest of start-up rather than the first dial.
        shoal::transport::install_crypto_provider();
    }
    let result = match args.command {
        Command::Create(a) => cli::create::run(a),
        Command::Show(a) => cli::show::run(a),
        Command::Verify(a) => cli::verify::run(a),
        Command::Seed(a) => cli::seed::run(a),
        Command::Fetch(a) => cli::fetch::run(a),
        Command::Node(a) => cli::node::run(a, false),
        Command::Tracker(a) => cli::node::run(a, true),
        Command::Add(a) => cli::add::run(a),
        Command::Ls(a) => cli::ls::run(a),
        Command::Rm(a) => cli::rm::run(a),
        Command::Status(a) => cli::status::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Config(ConfigCommand::Example) => {
            outp!("{}", shoal::config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
