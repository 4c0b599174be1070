use prost::Message;

use super::proto::{v1, v2};
use super::*;
use crate::storage::{Matcher, StoreConfig};

fn label(n: &str, v: &str) -> v1::Label {
    v1::Label {
        name: Bytes::copy_from_slice(n.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
        samples: samples
            .iter()
            .map(|&(t, v)| v1::Sample {
                timestamp: t,
                value: v,
            })
            .collect(),
        ..Default::default()
    }
}

fn v1_body(ts: Vec<v1::TimeSeries>) -> Bytes {
    Bytes::from(
        v1::WriteRequest {
            timeseries: ts,
            metadata: vec![],
        }
        .encode_to_vec(),
    )
}

fn store() -> Store {
    Store::new(StoreConfig {
        retention_ms: i64::MAX,
        max_series: 3,
        shards: 4,
        ..StoreConfig::default()
    })
}

fn stored(store: &Store, name: &str) -> Vec<(i64, f64)> {
    store
        .select(&[Matcher::equal("__name__", name)], i64::MIN, i64::MAX)
        .into_iter()
        .flat_map(|s| s.timestamps.into_iter().zip(s.values))
        .collect()
}

#[test]
fn negotiates_like_prometheus_but_trims_spaces() {
    assert_eq!(negotiate(None, None).unwrap(), Protocol::V1);
    assert_eq!(
        negotiate(Some("application/x-protobuf"), Some("snappy")).unwrap(),
        Protocol::V1
    );
    assert_eq!(
        negotiate(
            Some("application/x-protobuf; proto=io.prometheus.write.v2.Request"),
            None
        )
        .unwrap(),
        Protocol::V2
    );
    assert_eq!(
        negotiate(
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            None
        )
        .unwrap(),
        Protocol::V1
    );
    assert!(matches!(
        negotiate(Some("application/json"), None),
        Err(IngestError::Unsupported(_))
    ));
    assert!(matches!(
        negotiate(Some("application/x-protobuf;proto=foo.Bar"), None),
        Err(IngestError::Unsupported(_))
    ));
    assert!(matches!(
        negotiate(None, Some("gzip")),
        Err(IngestError::Unsupported(_))
    ));
}

#[test]
fn decompression_refuses_bombs_and_garbage() {
    let big = vec![0u8; 1 << 20];
    let compressed = snap::raw::Encoder::new().compress_vec(&big).unwrap();
    assert!(compressed.len() < 64 << 10);
    assert!(matches!(
        decompress(&compressed, 1 << 19),
        Err(IngestError::TooLarge(_))
    ));
    assert_eq!(decompress(&compressed, 1 << 20).unwrap().len(), 1 << 20);
    assert!(matches!(
        decompress(&compressed[..compressed.len() / 2], 1 << 20),
        Err(IngestError::Snappy(_))
    ));
    assert!(matches!(
        decompress(b"\xff\xff\xff\xff\xff\xff", 1 << 20),
        Err(IngestError::Snappy(_))
    ));
}

#[test]
fn v1_round_trip_with_unsorted_labels_and_empty_values() {
    let s = store();
    let body = v1_body(vec![series(
        &[("job", "a"), ("__name__", "up"), ("zone", "")],
        &[(1, 1.0), (2, 0.0)],
    )]);
    let out = write(&s, None, Protocol::V1, body, SampleBounds::unbounded()).unwrap();
    assert!(out.is_complete(), "{out:?}");
    assert_eq!(out.samples_written(), 2);
    assert_eq!(stored(&s, "up"), vec![(1, 1.0), (2, 0.0)]);
    let labels = s.series(&[Matcher::equal("__name__", "up")], i64::MIN, i64::MAX);
    assert_eq!(labels[0].to_string(), r#"up{job="a"}"#);
}

#[test]
fn invalid_series_are_refused_and_the_rest_stored() {
    let s = store();
    let bad_utf8 = v1::TimeSeries {
        labels: vec![
            label("__name__", "x"),
            v1::Label {
                name: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"\xff"),
            },
        ],
        samples: vec![v1::Sample {
            timestamp: 1,
            value: 1.0,
        }],
        ..Default::default()
    };
    let body = v1_body(vec![
        series(&[("__name__", "good")], &[(1, 1.0)]),
        series(&[("__name__", "x"), ("1bad", "v")], &[(1, 1.0)]),
        series(&[("__name__", "x"), ("a", "1"), ("a", "2")], &[(1, 1.0)]),
        series(&[("job", "no-name")], &[(1, 1.0)]),
        series(&[("__name__", "")], &[(1, 1.0)]),
        bad_utf8,
    ]);
    let out = write(&s, None, Protocol::V1, body, SampleBounds::unbounded()).unwrap();
    assert_eq!(out.invalid_series, 5);
    assert_eq!(out.samples_written(), 1);
    assert!(out.first_invalid.as_deref().unwrap().contains("1bad"));
    assert!(!out.is_complete());
    assert_eq!(stored(&s, "good"), vec![(1, 1.0)]);
}

#[test]
fn out_of_order_and_series_limit_are_partial_writes() {
    let s = store();
    write(
        &s,
        None,
        Protocol::V1,
        v1_body(vec![series(&[("__name__", "a")], &[(10, 1.0)])]),
        SampleBounds::unbounded(),
    )
    .unwrap();
    let body = v1_body(vec![
        series(&[("__name__", "a")], &[(5, 1.0), (20, 2.0)]),
        series(&[("__name__", "b")], &[(1, 1.0)]),
        series(&[("__name__", "c")], &[(1, 1.0)]),
        series(&[("__name__", "d")], &[(1, 1.0)]),
    ]);
    let out = write(&s, None, Protocol::V1, body, SampleBounds::unbounded()).unwrap();
    assert_eq!(out.append.out_of_order, 1);
    assert_eq!(out.append.series_limit, 1);
    assert_eq!(out.samples_written(), 3);
    assert!(out.summary().contains("out_of_order=1") && out.summary().contains("series_limit=1"));
    assert_eq!(stored(&s, "a"), vec![(10, 1.0), (20, 2.0)]);
}

#[test]
fn bounds_reject_old_and_future_samples() {
    let s = store();
    let body = v1_body(vec![series(
        &[("__name__", "a")],
        &[(1, 1.0), (50, 2.0), (500, 3.0)],
    )]);
    let out = write(
        &s,
        None,
        Protocol::V1,
        body,
        SampleBounds {
            min_t: 10,
            max_t: 100,
        },
    )
    .unwrap();
    assert_eq!(
        (out.too_old, out.too_far_in_future, out.samples_written()),
        (1, 1, 1)
    );
}

#[test]
fn histograms_and_exemplars_are_counted_and_dropped() {
    let s = store();
    let mut ts = series(&[("__name__", "h")], &[(1, 1.0)]);
    ts.histograms.push(v1::Histogram {
        timestamp: 1,
        ..Default::default()
    });
    ts.exemplars.push(v1::Exemplar {
        labels: vec![label("trace_id", "x")],
        value: 1.0,
        timestamp: 1,
    });
    let out = write(
        &s,
        None,
        Protocol::V1,
        v1_body(vec![ts]),
        SampleBounds::unbounded(),
    )
    .unwrap();
    assert_eq!(
        (
            out.histograms_dropped,
            out.exemplars_dropped,
            out.samples_written()
        ),
        (1, 1, 1)
    );
    assert!(out.is_complete());
}

fn v2_request(symbols: &[&str], series: Vec<v2::TimeSeries>) -> Bytes {
    Bytes::from(
        v2::Request {
            symbols: symbols
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect(),
            timeseries: series,
        }
        .encode_to_vec(),
    )
}

fn v2_series(refs: &[u32], samples: &[(i64, f64)]) -> v2::TimeSeries {
    v2::TimeSeries {
        labels_refs: refs.to_vec(),
        samples: samples
            .iter()
            .map(|&(t, v)| v2::Sample {
                value: v,
                timestamp: t,
                start_timestamp: 0,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn v2_symbols_resolve_and_errors_are_per_series() {
    let s = store();
    let syms = ["", "__name__", "up", "job", "api", "odd"];
    let body = v2_request(
        &syms,
        vec![
            v2_series(&[1, 2, 3, 4], &[(1, 1.0)]),
            v2_series(&[1, 2, 3], &[(1, 1.0)]),
            v2_series(&[1, 2, 3, 99], &[(1, 1.0)]),
            v2_series(&[1, 5], &[]),
        ],
    );
    let out = write(&s, None, Protocol::V2, body, SampleBounds::unbounded()).unwrap();
    assert_eq!(out.samples_written(), 1);
    assert_eq!(out.invalid_series, 3);
    assert_eq!(stored(&s, "up"), vec![(1, 1.0)]);
}

#[test]
fn both_versions_validate_label_names_the_same_way() {
    // `a-b` was refused by 1.0 and stored by 2.0.
    for (name, ok) in [("a-b", false), ("1a", false), ("a.b", false), ("_a1", true)] {
        let s = store();
        let v1 = write(
            &s,
            None,
            Protocol::V1,
            v1_body(vec![series(&[("__name__", "x"), (name, "v")], &[(1, 1.0)])]),
            SampleBounds::unbounded(),
        )
        .unwrap();
        let v2 = write(
            &s,
            None,
            Protocol::V2,
            v2_request(
                &["", "__name__", "y", name, "v"],
                vec![v2_series(&[1, 2, 3, 4], &[(1, 1.0)])],
            ),
            SampleBounds::unbounded(),
        )
        .unwrap();
        assert_eq!(v1.is_complete(), ok, "{name}: {v1:?}");
        assert_eq!(v2.is_complete(), ok, "{name}: {v2:?}");
        assert_eq!(v1.first_invalid, v2.first_invalid);
        if !ok {
            assert!(v2
                .summary()
                .contains(&format!("invalid label name {name:?}")));
        }
    }
}

#[test]
fn label_limits_refuse_the_series_and_name_the_limit() {
    let limits = |labels| WriteLimits {
        bounds: SampleBounds::unbounded(),
        labels,
    };
    let tight = LabelLimits {
        max_labels: 3,
        max_name_bytes: 8,
        max_value_bytes: 10,
    };
    let body = v1_body(vec![
        series(&[("__name__", "ok"), ("a", "1"), ("b", "")], &[(1, 1.0)]),
        series(
            &[("__name__", "many"), ("a", "1"), ("b", "2"), ("c", "3")],
            &[(1, 1.0), (2, 2.0)],
        ),
        series(
            &[("__name__", "long_name"), ("abcdefghi", "1")],
            &[(1, 1.0)],
        ),
        series(
            &[("__name__", "long_value"), ("a", "01234567890")],
            &[(1, 1.0)],
        ),
    ]);
    let s = store();
    let out = write_with(&s, None, Protocol::V1, &body, limits(tight)).unwrap();
    assert_eq!(out.samples_written(), 1);
    assert_eq!((out.over_limit_series, out.over_limit_samples), (3, 4));
    let summary = out.summary();
    assert!(summary.contains("label_limits=4"), "{summary}");
    assert!(
        summary.contains("series has 4 labels, over the limit of 3 (remote_write.label_limit)"),
        "{summary}"
    );
    // Each limit names itself.
    for (labels, key) in [
        (
            &[("__name__", "n"), ("abcdefghi", "1")][..],
            "remote_write.label_name_length_limit",
        ),
        (
            &[("__name__", "n"), ("a", "01234567890")][..],
            "remote_write.label_value_length_limit",
        ),
    ] {
        let body = v1_body(vec![series(labels, &[(1, 1.0)])]);
        let out = write_with(&store(), None, Protocol::V1, &body, limits(tight)).unwrap();
        assert!(
            out.first_invalid.as_deref().unwrap().contains(key),
            "{out:?}"
        );
    }
    // Version 2 applies the same limits.
    let body = v2_request(
        &["", "__name__", "v", "a", "01234567890"],
        vec![v2_series(&[1, 2, 3, 4], &[(1, 1.0)])],
    );
    let out = write_with(&store(), None, Protocol::V2, &body, limits(tight)).unwrap();
    assert_eq!(out.over_limit_series, 1);
    // Zero disables a limit.
    let out = write_with(
        &s,
        None,
        Protocol::V1,
        &v1_body(vec![series(
            &[("__name__", "many"), ("a", "1"), ("b", "2"), ("c", "3")],
            &[(1, 1.0)],
        )]),
        limits(LabelLimits::unlimited()),
    )
    .unwrap();
    assert!(out.is_complete());
}

#[test]
fn a_series_longer_than_a_batch_is_stored_whole_and_in_order() {
    let n = FLUSH_SAMPLES * 2 + 17;
    let samples: Vec<(i64, f64)> = (0..n as i64).map(|t| (t, t as f64)).collect();
    for protocol in [Protocol::V1, Protocol::V2] {
        let s = store();
        let body = match protocol {
            Protocol::V1 => v1_body(vec![
                series(&[("__name__", "long"), ("job", "a")], &samples),
                series(&[("__name__", "short")], &[(1, 1.0)]),
            ]),
            Protocol::V2 => v2_request(
                &["", "__name__", "long", "job", "a", "short"],
                vec![
                    v2_series(&[1, 2, 3, 4], &samples),
                    v2_series(&[1, 5], &[(1, 1.0)]),
                ],
            ),
        };
        let out = write(&s, None, protocol, body, SampleBounds::unbounded()).unwrap();
        assert!(out.is_complete(), "{out:?}");
        assert_eq!(out.samples_written(), n as u64 + 1);
        assert_eq!(out.append.series_created, 2);
        assert_eq!(stored(&s, "long"), samples);
    }
}

#[test]
fn a_request_malformed_after_valid_series_stores_nothing() {
    for protocol in [Protocol::V1, Protocol::V2] {
        let s = store();
        let mut body = match protocol {
            Protocol::V1 => v1_body(vec![series(&[("__name__", "a")], &[(1, 1.0)])]).to_vec(),
            Protocol::V2 => v2_request(
                &["", "__name__", "a"],
                vec![v2_series(&[1, 2], &[(1, 1.0)])],
            )
            .to_vec(),
        };
        // A series field (1 in 1.0, 5 in 2.0) whose length runs past the end.
        body.extend_from_slice(if protocol == Protocol::V1 {
            b"\x0a\x05\x00"
        } else {
            b"\x2a\x05\x00"
        });
        let out = write(
            &s,
            None,
            protocol,
            Bytes::from(body),
            SampleBounds::unbounded(),
        );
        assert!(matches!(out, Err(IngestError::Protobuf(_))), "{out:?}");
        assert_eq!(s.series_count(), 0);
    }
}

#[test]
fn v2_requires_empty_first_symbol() {
    let body = v2_request(&["x"], vec![]);
    assert!(matches!(
        write(
            &store(),
            None,
            Protocol::V2,
            body,
            SampleBounds::unbounded()
        ),
        Err(IngestError::Invalid(_))
    ));
}

#[test]
fn v2_body_read_as_v1_is_empty_not_an_error() {
    // Wire compatibility: v2's fields 4 and 5 are unknown to v1, so nothing decodes.
    let body = v2_request(
        &["", "__name__", "up"],
        vec![v2_series(&[1, 2], &[(1, 1.0)])],
    );
    let out = write(
        &store(),
        None,
        Protocol::V1,
        body,
        SampleBounds::unbounded(),
    )
    .unwrap();
    assert_eq!(out.series_received, 0);
}

#[test]
fn garbage_protobuf_is_an_error() {
    let out = write(
        &store(),
        None,
        Protocol::V1,
        Bytes::from_static(b"\x0a\xff\xff\xff\xff\x0f"),
        SampleBounds::unbounded(),
    );
    assert!(matches!(out, Err(IngestError::Protobuf(_))));
}

#[test]
fn staleness_markers_survive_decoding() {
    let s = store();
    let stale = f64::from_bits(crate::storage::STALE_NAN_BITS);
    write(
        &s,
        None,
        Protocol::V1,
        v1_body(vec![series(&[("__name__", "a")], &[(1, stale)])]),
        SampleBounds::unbounded(),
    )
    .unwrap();
    assert_eq!(
        stored(&s, "a")[0].1.to_bits(),
        crate::storage::STALE_NAN_BITS
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let s = store();
        let _ = write(&s, None, Protocol::V1, Bytes::from(body.clone()), SampleBounds::unbounded());
        let _ = write(&s, None, Protocol::V2, Bytes::from(body.clone()), SampleBounds::unbounded());
        let _ = decompress(&body, 1 << 16);
    }
}

#[test]
fn detectors_score_samples_as_they_are_ingested() {
    use crate::anomaly::{Algorithm, Analyzer, DetectorSpec, IncidentConfig};
    let s = Store::new(StoreConfig {
        retention_ms: i64::MAX,
        max_series: 100,
        shards: 4,
        ..StoreConfig::default()
    });
    let detections =
        prometheus::IntCounterVec::new(prometheus::Opts::new("d", "d"), &["detector", "severity"])
            .unwrap();
    let dropped = prometheus::IntCounter::new("o", "o").unwrap();
    let analyzer = Analyzer::new(detections.clone(), dropped, IncidentConfig::default());
    let mut spec = DetectorSpec::new("latency_z", r#"latency{job="api"}"#, Algorithm::Zscore);
    spec.warmup = Some(20);
    analyzer.reload(&[spec]).unwrap();
    let mut events = analyzer.subscribe();
    let send = |t: i64, v: f64| {
        let body = v1_body(vec![
            series(
                &[("__name__", "latency"), ("job", "api"), ("instance", "a")],
                &[(t, v)],
            ),
            series(&[("__name__", "latency"), ("job", "web")], &[(t, v)]),
        ]);
        write(
            &s,
            Some(&analyzer),
            Protocol::V1,
            body,
            SampleBounds::unbounded(),
        )
        .unwrap()
    };
    for i in 0..200 {
        send(i * 15_000, 1.0 + 0.01 * ((i % 7) as f64));
    }
    assert_eq!(
        detections
            .with_label_values(&["latency_z", "warning"])
            .get(),
        0
    );
    send(200 * 15_000, 50.0);
    assert_eq!(
        detections
            .with_label_values(&["latency_z", "warning"])
            .get(),
        1
    );
    let ev = events.try_recv().unwrap();
    assert_eq!((ev.detector.as_str(), ev.value), ("latency_z", 50.0));
    // Scores are ordinary series with the source labels and the detector's name.
    let scores = s.select(
        &[
            Matcher::equal("__name__", "anomaly_score"),
            Matcher::equal("detector", "latency_z"),
        ],
        i64::MIN,
        i64::MAX,
    );
    assert_eq!(scores.len(), 1, "only the matched series is scored");
    assert_eq!(scores[0].labels.get("instance"), Some("a"));
    assert!(*scores[0].values.last().unwrap() > 3.0);
    let incidents = analyzer.incidents(200 * 15_000);
    assert_eq!(incidents.len(), 1);
}

#[test]
fn detector_outputs_leave_headroom_for_ingested_series() {
    use crate::anomaly::{Algorithm, Analyzer, DetectorSpec, IncidentConfig};
    let s = Store::new(StoreConfig {
        retention_ms: i64::MAX,
        max_series: 20,
        shards: 2,
        ..StoreConfig::default()
    });
    let detections =
        prometheus::IntCounterVec::new(prometheus::Opts::new("d", "d"), &["detector", "severity"])
            .unwrap();
    let dropped = prometheus::IntCounter::new("o", "o").unwrap();
    let analyzer = Analyzer::new(detections, dropped.clone(), IncidentConfig::default());
    let mut spec = DetectorSpec::new("t", "m", Algorithm::Threshold);
    spec.upper = Some(100.0);
    analyzer.reload(&[spec]).unwrap();
    // 10 input series, each wanting an output series: 20 in all, over the 18 allowed.
    let body = v1_body(
        (0..10)
            .map(|i| series(&[("__name__", "m"), ("i", &i.to_string())], &[(1, 1.0)]))
            .collect(),
    );
    write(
        &s,
        Some(&analyzer),
        Protocol::V1,
        body,
        SampleBounds::unbounded(),
    )
    .unwrap();
    assert!(s.series_count() <= 18, "{} series", s.series_count());
    assert!(dropped.get() > 0);
    // An ingested series still fits.
    let body = v1_body(vec![series(&[("__name__", "other")], &[(1, 1.0)])]);
    let out = write(
        &s,
        Some(&analyzer),
        Protocol::V1,
        body,
        SampleBounds::unbounded(),
    )
    .unwrap();
    assert!(out.is_complete(), "{out:?}");
}
