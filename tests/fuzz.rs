//! The fuzz targets' bounded run in the suite: every input kept under
//! `fuzz/regressions/<target>/` (crashes the long cargo-fuzz runs found, and seeds)
//! is replayed, then each target gets a few hundred generated inputs. The long runs
//! are described in fuzz/README.md.

#[path = "../fuzz/harness.rs"]
mod harness;

use bytes::Bytes;
use closedloop::ingest::proto::{v1, v2};
use closedloop::ingest::Protocol;
use proptest::prelude::*;
use prost::Message;

/// Runs `body` on every kept input of `target`; returns how many there were.
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{} fails again", path.display());
        n += 1;
    }
    n
}

#[test]
fn kept_inputs_replay_cleanly() {
    let v1 = replay("remote_write_v1", |d| {
        harness::remote_write(Protocol::V1, d)
    });
    let v2 = replay("remote_write_v2", |d| {
        harness::remote_write(Protocol::V2, d)
    });
    let promql = replay("promql", harness::promql);
    let rules = replay("rule_file", harness::rule_file);
    assert!(
        v1 > 0 && v2 > 0 && promql > 0 && rules > 0,
        "kept inputs are missing"
    );
}

/// Short strings over an alphabet with valid and invalid label characters.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z_A-Z0-9:.\\- é]{0,12}").unwrap()
}

fn samples() -> impl Strategy<Value = Vec<(i64, f64)>> {
    proptest::collection::vec((any::<i64>(), any::<f64>()), 0..4)
}

/// Random bit flips and a random cut, applied to an encoded message.
fn mutate(mut body: Vec<u8>, flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    if !body.is_empty() {
        for &(at, bit) in flips {
            let at = at % body.len();
            body[at] ^= 1 << (bit % 8);
        }
        let keep = body.len() - cut % (body.len() + 1) / 4;
        body.truncate(keep);
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn remote_write_1_generated(
        series in proptest::collection::vec((proptest::collection::vec((text(), text()), 0..5), samples()), 0..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        let req = v1::WriteRequest {
            timeseries: series.into_iter().map(|(labels, samples)| v1::TimeSeries {
                labels: labels.into_iter().map(|(n, v)| v1::Label { name: Bytes::from(n), value: Bytes::from(v) }).collect(),
                samples: samples.into_iter().map(|(t, v)| v1::Sample { timestamp: t, value: v }).collect(),
                ..Default::default()
            }).collect(),
            metadata: vec![],
        };
        harness::remote_write(Protocol::V1, &mutate(req.encode_to_vec(), &flips, cut));
    }

    #[test]
    fn remote_write_2_generated(
        symbols in proptest::collection::vec(text(), 0..6),
        series in proptest::collection::vec((proptest::collection::vec(0u32..8, 0..6), samples()), 0..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        let req = v2::Request {
            symbols: std::iter::once(String::new()).chain(symbols).map(Bytes::from).collect(),
            timeseries: series.into_iter().map(|(refs, samples)| v2::TimeSeries {
                labels_refs: refs,
                samples: samples.into_iter().map(|(t, v)| v2::Sample { timestamp: t, value: v, start_timestamp: 0 }).collect(),
                ..Default::default()
            }).collect(),
        };
        harness::remote_write(Protocol::V2, &mutate(req.encode_to_vec(), &flips, cut));
    }

    #[test]
    fn promql_generated(data in proptest::collection::vec(any::<u8>(), 1..200)) {
        harness::promql(&data);
    }

    #[test]
    fn rule_file_generated(
        name in text(),
        expr in "[a-z_(){}\\[\\]0-9+*/ =\"~!<>,.:-]{0,40}",
        template in "[a-z${}. |\"()]{0,30}",
        kind in 0usize..3,
    ) {
        let rule = match kind {
            0 => format!("- record: {name}\n        expr: '{expr}'"),
            1 => format!("- alert: {name}\n        expr: '{expr}'\n        annotations: {{s: '{template}'}}"),
            _ => format!("- alert: A\n        expr: up\n        for: {name}\n        labels: {{{name}: '{template}'}}"),
        };
        let file = format!("groups:\n  - name: g\n    rules:\n      {rule}\n");
        harness::rule_file(file.as_bytes());
    }
}
