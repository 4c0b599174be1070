//! Every kind of bad remote-write request gets its status and a reason, and what was
//! stored before it is still there afterwards.

use bytes::Bytes;
use closedloop::ingest::proto::v2;
use prost::Message;

use crate::common::*;

const PROTOBUF: &str = "application/x-protobuf";

fn seed_count(cl: &Closedloop) -> usize {
    cl.api("/api/v1/series?match[]=seed")
        .as_array()
        .unwrap()
        .len()
}

fn stored_samples(cl: &Closedloop) -> f64 {
    cl.metric("closedloop_store_samples", "")
}

#[test]
fn bad_requests_get_their_status_and_lose_nothing() {
    let cl = Closedloop::start("storage: {max_series: 4}\nremote_write: {max_body_bytes: 4096}\n");
    let now = now_ms();
    let seed: &[(&str, &str)] = &[("__name__", "seed"), ("job", "a")];
    let (status, _) = post_write(
        &cl,
        v1_body(&[(seed, &[(now - 2000, 1.0), (now - 1000, 2.0)])]),
        PROTOBUF,
    );
    assert_eq!(status, 204);
    assert_eq!((seed_count(&cl), stored_samples(&cl)), (1, 2.0));

    let good = v1_body(&[(&[("__name__", "x")], &[(now, 1.0)])]);
    let garbage_proto = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff\xff\xff\x0f\x01")
        .unwrap();
    let oversized: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "truncated snappy",
            good[..good.len() / 2].to_vec(),
            PROTOBUF,
            400,
            "snappy",
        ),
        (
            "not snappy at all",
            b"hello".to_vec(),
            PROTOBUF,
            400,
            "snappy",
        ),
        ("garbage protobuf", garbage_proto, PROTOBUF, 400, "protobuf"),
        (
            "wrong content type",
            good.clone(),
            "application/json",
            415,
            "Content-Type",
        ),
        (
            "unknown proto",
            good.clone(),
            "application/x-protobuf;proto=foo.Bar",
            415,
            "foo.Bar",
        ),
        ("oversized body", oversized, PROTOBUF, 413, ""),
        (
            "invalid label name",
            v1_body(&[(&[("__name__", "x"), ("", "v")], &[(now, 1.0)])]),
            PROTOBUF,
            400,
            "invalid label name \"\"",
        ),
        (
            "duplicate label name",
            v1_body(&[(&[("__name__", "x"), ("a", "1"), ("a", "2")], &[(now, 1.0)])]),
            PROTOBUF,
            400,
            "duplicate label name \"a\"",
        ),
        (
            "empty metric name",
            v1_body(&[(&[("__name__", ""), ("a", "1")], &[(now, 1.0)])]),
            PROTOBUF,
            400,
            "metric name",
        ),
        (
            "no metric name",
            v1_body(&[(&[("a", "1")], &[(now, 1.0)])]),
            PROTOBUF,
            400,
            "metric name",
        ),
        (
            "out of order",
            v1_body(&[(seed, &[(now - 1500, 9.0)])]),
            PROTOBUF,
            400,
            "out_of_order=1",
        ),
        (
            "far future",
            v1_body(&[(&[("__name__", "x")], &[(now + 3_600_000, 1.0)])]),
            PROTOBUF,
            400,
            "too_far_in_future=1",
        ),
    ];
    for (name, body, ct, want_status, want_reason) in cases {
        let (status, text) = post_write(&cl, body, ct);
        assert_eq!(status, want_status, "{name}: {text}");
        assert!(
            text.contains(want_reason),
            "{name}: reason {text:?} lacks {want_reason:?}"
        );
        assert!(
            !text.trim().contains('\n'),
            "{name}: reason is not one line: {text:?}"
        );
        assert_eq!(
            (seed_count(&cl), stored_samples(&cl)),
            (1, 2.0),
            "{name}: stored data changed"
        );
    }

    // Series limit 4: the seed plus 3 more fit; the valid rest of the request is kept.
    let labels: Vec<Vec<(&str, String)>> = (0..5)
        .map(|i| vec![("__name__", "lim".to_owned()), ("i", i.to_string())])
        .collect();
    let owned: Vec<Vec<(&str, &str)>> = labels
        .iter()
        .map(|l| l.iter().map(|(n, v)| (*n, v.as_str())).collect())
        .collect();
    let samples = [(now, 1.0)];
    let series: Vec<TestSeries<'_>> = owned.iter().map(|l| (l.as_slice(), &samples[..])).collect();
    let (status, text) = post_write(&cl, v1_body(&series), PROTOBUF);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("stored 3 of 5") && text.contains("series_limit=2"),
        "{text}"
    );
    assert_eq!(
        cl.api("/api/v1/series?match[]=lim")
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(seed_count(&cl), 1);
    assert_eq!(
        cl.metric(
            "closedloop_remote_write_samples_rejected_total",
            "series_limit"
        ),
        2.0
    );

    // The wrong method is refused, and the process is still serving.
    let status = http()
        .get(cl.url("/api/v1/write"))
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 405);
    assert!(http()
        .get(cl.url("/-/healthy"))
        .send()
        .unwrap()
        .status()
        .is_success());
}

#[test]
fn remote_write_2_reports_what_was_written() {
    let cl = Closedloop::start("");
    let now = now_ms();
    let symbols = ["", "__name__", "up", "job", "api", "le"];
    let req = v2::Request {
        symbols: symbols
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect(),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    v2::Sample {
                        value: 1.0,
                        timestamp: now - 1000,
                        start_timestamp: 0,
                    },
                    v2::Sample {
                        value: 0.0,
                        timestamp: now,
                        start_timestamp: 0,
                    },
                ],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![],
                    value: 1.0,
                    timestamp: now,
                }],
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 5],
                histograms: vec![v2::Histogram {
                    timestamp: now,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let resp = http()
        .post(cl.url("/api/v1/write"))
        .header(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("x-prometheus-remote-write-samples-written").as_deref(),
        Some("2")
    );
    assert_eq!(
        header("x-prometheus-remote-write-histograms-written").as_deref(),
        Some("0")
    );
    assert_eq!(
        cl.metric("closedloop_remote_write_histograms_dropped_total", ""),
        1.0
    );
    // The exemplar is kept (remote write 2.0 exemplars go to the exemplar store).
    assert_eq!(
        header("x-prometheus-remote-write-exemplars-written").as_deref(),
        Some("1")
    );
    assert_eq!(
        cl.metric("closedloop_remote_write_exemplars_written_total", ""),
        1.0
    );
    let series = cl.api("/api/v1/series?match[]=up");
    assert_eq!(
        series,
        serde_json::json!([{"__name__": "up", "job": "api"}])
    );
}
