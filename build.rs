//! Embeds the prebuilt libduckdb's directory in every binary's RUNPATH, so `pipeline` and the test
//! binaries find the library at run time without LD_LIBRARY_PATH. Skipped for `--features bundled`.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") else {
        return;
    };
    match Path::new(&dir).canonicalize() {
        Ok(dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display()),
        Err(_) => println!(
            "cargo:warning=DUCKDB_LIB_DIR={} does not exist: run scripts/fetch-duckdb first",
            Path::new(&dir).display()
        ),
    }
}
