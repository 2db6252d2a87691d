//! `stackctl`: parse the arguments, run the command, exit with its code.

#[tokio::main]
async fn main() {
    stackd_tls::install_default_provider();
    let cli = match stackd_cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => std::process::exit(code),
    };
    let code = match stackd_cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            stackd_cli::EXIT_ERROR
        }
    };
    std::process::exit(stackd_cli::output::final_code(code));
}
