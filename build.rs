//! Compiles the driver API (`proto/v1alpha1/service.proto`) into Rust with a
//! vendored `protoc`, so no system install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only the API and this script: without these lines any file added to
    // the package would rebuild the crate.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // File contents share the fetched value's (zeroizing) buffer instead
        // of being copied into each response.
        .bytes(".v1alpha1.File.contents")
        .compile_with_config(config, &["proto/v1alpha1/service.proto"], &["proto"])?;
    Ok(())
}
