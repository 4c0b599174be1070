//! Compiles the remote-write schemas in proto/ with protox (a pure-Rust protobuf
//! compiler), so a machine without a system `protoc` builds closedloop.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/remote_v1.proto", "proto/remote_v2.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    prost_build::Config::new()
        // Label strings and symbols are sliced out of the request buffer, not copied.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
