fn main() -> std::process::ExitCode {
    pipeline::cli::main()
}
