//! The `cpm` binary, built inside this package so that its tests can run it
//! as a child process (`CARGO_BIN_EXE_cpm-under-test`): the same `main`.

fn main() -> std::process::ExitCode {
    cpm::cli::main()
}
