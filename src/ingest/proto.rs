//! Generated remote-write message types (see proto/ and build.rs).

#![allow(unreachable_pub, clippy::all, missing_docs)]

/// Remote write 1.0: `prometheus.WriteRequest`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Remote write 2.0: `io.prometheus.write.v2.Request`.
pub mod v2 {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}
