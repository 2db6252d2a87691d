//! Compiles proto/stackd/v1/*.proto with protox (pure Rust: no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let files =
        ["stackd/v1/types.proto", "stackd/v1/control.proto", "stackd/v1/dispatcher.proto", "stackd/v1/raft.proto"];
    let fds = protox::compile(files, [root])?;
    tonic_prost_build::configure()
        // Its Debug is written by hand (crates/proto/src/lib.rs): it never shows the credentials.
        .skip_debug([".stackd.v1.RegistryCredential"])
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={root}");
    for f in files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    Ok(())
}
