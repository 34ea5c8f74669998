//! `cpm`: one binary for every role; see [`cpm::cli`].

fn main() -> std::process::ExitCode {
    cpm::cli::main()
}
