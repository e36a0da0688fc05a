//! Generates prost messages and tonic services from `proto/*.proto`.

const PROTOS: &[&str] = &[
    "proto/metapb.proto",
    "proto/errorpb.proto",
    "proto/kvrpcpb.proto",
    "proto/raft_serverpb.proto",
    "proto/tikvpb.proto",
    "proto/pdpb.proto",
    "proto/pdraftpb.proto",
    "proto/keyspacepb.proto",
    "proto/etcdserverpb.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Use the vendored protoc so no system install is needed. `set_var` is
    // safe in edition 2021 and build scripts are single-threaded here.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);

    println!("cargo:rerun-if-changed=proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Services only override the RPCs they support; the rest answer
        // `Unimplemented`.
        .generate_default_stubs(true)
        // Every `bytes` field becomes `bytes::Bytes` (cheap clones).
        .bytes(".")
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
