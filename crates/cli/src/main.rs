//! `stackctl`: parse the arguments, run the command, exit with its code.

use clap::Parser;

#[tokio::main]
async fn main() {
    stackd_tls::install_default_provider();
    let cli = stackd_cli::Cli::parse();
    let code = match stackd_cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
