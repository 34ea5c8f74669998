//! Compiles `cpm/v1/*.proto` with the vendored protoc, and writes the
//! descriptor set that gRPC reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "cpm/v1/common.proto",
        "cpm/v1/events.proto",
        "cpm/v1/referral_intake.proto",
        "cpm/v1/risk_assessment.proto",
        "cpm/v1/mentor_matching.proto",
        "cpm/v1/contact_logging.proto",
        "cpm/v1/notifications.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let vendored_includes = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("."), vendored_includes];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("cpm_descriptor.bin"))
        .compile_with_config(config, &protos.map(PathBuf::from), &includes)?;
    Ok(())
}
