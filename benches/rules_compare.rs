//! Side-by-side rule evaluation benchmark (placeholder until written below).
fn main() {
    eprintln!("rules_compare: not implemented yet");
    std::process::exit(1);
}
