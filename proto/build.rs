//! Compiles the .proto files with protox (a pure-Rust protobuf compiler), so
//! building needs no system `protoc`, and writes the encoded descriptor set
//! that the servers register for gRPC reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "orgauth/org/v1/org_service.proto",
    "orgauth/org/v1/job_service.proto",
    "orgauth/auth/v1/auth_service.proto",
    // Google's public LRO API (and google.rpc.Status, which it imports),
    // written in our own words: org-server serves its jobs through it.
    "google/longrunning/operations.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not announce its inputs; without these lines
    // cargo would rebuild on every change in the crate, or miss proto edits.
    println!("cargo:rerun-if-changed=orgauth");
    println!("cargo:rerun-if-changed=google");

    let fds = protox::Compiler::new(["."])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("orgauth_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // See `LeanCodec`: every stream would otherwise hold 8 KiB.
        .codec_path("crate::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
