//! Compiles the .proto files with protox (pure Rust, no system `protoc`) and generates the
//! tonic/prost code plus a file descriptor set for server reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "gridmesh/v1/gridmesh.proto",
    "gridmesh/v1/auth.proto",
    "gridmesh/internal/v1/auth.proto",
    "gridmesh/v1/alerts.proto",
    "gridmesh/internal/v1/storage.proto",
    "gridmesh/internal/v1/cluster.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let file_descriptors = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = out_dir.join("gridmesh_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&file_descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(file_descriptors)?;
    Ok(())
}
