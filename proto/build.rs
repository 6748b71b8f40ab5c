//! Compiles `proto/*.proto` with protox (pure Rust, no protoc) and prost-build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["camesh.proto", "nvr.proto", "device.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    // Payload-carrying fields decode as `Bytes`: slices of the input, no copy.
    config.bytes(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
