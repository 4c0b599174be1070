//! Offline commands built on the runtime's modules: `simulate` (the loop closing on
//! a simulated world). The runtime never imports from here.

pub mod simulate;
