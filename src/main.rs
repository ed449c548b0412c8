//! The `backstop` binary: parse arguments, set up logging and the runtime, run the command,
//! map its error to the exit code of SPEC.md, print the error once as a paragraph.

use clap::Parser;

fn main() {
    let cli = backstop::cli::Cli::parse();
    backstop::cli::init_logging(&cli.global);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backstop: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(backstop::cli::run(cli));
    // Blocking workers notice a cancelled run through their closed channels; do not wait
    // on them forever.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    std::process::exit(code);
}
