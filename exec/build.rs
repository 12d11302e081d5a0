//! Generates the control-plane messages and services from `proto/shoal.proto` with a
//! protoc binary that ships as a crate, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/shoal.proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/shoal.proto"],
        &["proto"],
    )?;
    Ok(())
}
