//! Compiles bench/proto/etcd.proto (a minimal etcd KV client) with protox:
//! no system protoc, and no etcd-client crate with a second tonic/prost.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "proto";
    let file = "etcd.proto";
    let fds = protox::compile([file], [root])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    println!("cargo:rerun-if-changed={root}/{file}");
    Ok(())
}
