//! The five detectors on live remote-write traffic through the real binary: declared
//! in a rule file, fed by remote write, their outputs queried back with PromQL, their
//! detections counted in /metrics and grouped into one incident at /api/v1/anomalies.

use std::time::Duration;

use crate::common::*;

const RULES: &str = r#"groups:
  - name: latency
    detectors:
      - {name: lat_z, selector: latency_seconds, algorithm: zscore, window: 30m, warmup: 20}
      - {name: lat_iqr, selector: latency_seconds, algorithm: iqr, warmup: 20}
      - {name: lat_hw, selector: latency_seconds, algorithm: holt_winters, season_samples: 20, severity: critical}
      - {name: lat_max, selector: latency_seconds, algorithm: threshold, upper: 10}
      - {name: lat_trend, selector: latency_seconds, algorithm: trend, window: 30m}
    rules: []
"#;

/// A small deterministic wobble around 1.0 with a 20-sample cycle.
fn normal(i: usize, instance: usize) -> f64 {
    1.0 + 0.05 * ((i % 20) as f64 / 20.0 * std::f64::consts::TAU).sin()
        + 0.01 * (((i * 7 + instance * 3) % 11) as f64 / 11.0)
}

#[test]
fn detectors_score_live_remote_write_traffic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    let cl = Closedloop::start_in(dir, "rule_files: ['rules.yml']\n");
    let instances = ["a", "b", "c"];
    let labels: Vec<[(&str, &str); 3]> = instances
        .iter()
        .map(|i| {
            [
                ("__name__", "latency_seconds"),
                ("instance", *i),
                ("job", "api"),
            ]
        })
        .collect();
    // One hour of 15 s samples ending now, one request per scrape as Prometheus sends.
    let end = now_ms() - 1_000;
    let steps = 240usize;
    for i in 0..steps {
        let t = end - ((steps - 1 - i) as i64) * 15_000;
        let spike = i == steps - 1;
        let samples: Vec<[(i64, f64); 1]> = (0..instances.len())
            .map(|k| [(t, if spike && k == 0 { 50.0 } else { normal(i, k) })])
            .collect();
        let series: Vec<TestSeries<'_>> = labels
            .iter()
            .zip(&samples)
            .map(|(l, s)| (&l[..], &s[..]))
            .collect();
        let (status, text) = post_write(&cl, v1_body(&series), "application/x-protobuf");
        assert_eq!(status, 204, "{text}");
    }

    // Scoring runs off the request path: wait until the worker has scored it all.
    let sent = (steps * instances.len()) as f64;
    wait_until(
        "the scoring worker to catch up",
        Duration::from_secs(60),
        || cl.metric("closed_loop_anomaly_samples_scored_total", "") >= sent,
    );
    assert_eq!(
        cl.metric("closed_loop_anomaly_samples_dropped_total", ""),
        0.0
    );
    assert_eq!(cl.metric("closed_loop_anomaly_queue_samples", ""), 0.0);

    // Every detector wrote its scores back as ordinary series, for every instance.
    let per_detector = cl.api("/api/v1/query?query=count%20by%20(detector)%20(anomaly_score)");
    let mut counts: Vec<(String, String)> = per_detector["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["detector"].as_str().unwrap().to_owned(),
                r["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    counts.sort();
    let want: Vec<(String, String)> = ["lat_hw", "lat_iqr", "lat_max", "lat_trend", "lat_z"]
        .iter()
        .map(|d| (d.to_string(), "3".to_string()))
        .collect();
    assert_eq!(counts, want, "{per_detector}");
    // Holt-Winters also publishes its forecast and band.
    for output in ["anomaly_forecast", "anomaly_upper", "anomaly_lower"] {
        let q = format!(
            "/api/v1/query?query={output}%7Bdetector%3D%22lat_hw%22%2Cinstance%3D%22b%22%7D"
        );
        assert_eq!(
            cl.api(&q)["result"].as_array().unwrap().len(),
            1,
            "{output}"
        );
    }
    // The spiking instance scores far above the quiet ones.
    let spiky = cl
        .api("/api/v1/query?query=anomaly_score%7Bdetector%3D%22lat_z%22%2Cinstance%3D%22a%22%7D");
    let score: f64 = spiky["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(score > 10.0, "zscore of the spike is {score}");

    // The spike is a detection for each detector that crossed, counted by severity...
    let mut detected = Vec::new();
    wait_until("detections in /metrics", Duration::from_secs(5), || {
        detected = ["lat_z", "lat_iqr", "lat_hw", "lat_max", "lat_trend"]
            .into_iter()
            .filter(|d| {
                cl.metric("closed_loop_detections_total", &format!("detector=\"{d}\"")) >= 1.0
            })
            .collect();
        detected.len() >= 3
    });
    assert!(
        detected.contains(&"lat_max") && detected.contains(&"lat_z"),
        "{detected:?}"
    );
    // ... and all of them are one incident of job "api", with instance a as member.
    let incidents = cl.api("/api/v1/anomalies")["incidents"].clone();
    let list = incidents.as_array().unwrap();
    assert_eq!(list.len(), 1, "{incidents}");
    let members = list[0]["members"].as_array().unwrap();
    assert!(
        members.iter().all(|m| m["labels"]["instance"] == "a"),
        "{incidents}"
    );
    assert_eq!(members.len(), detected.len(), "{incidents}");
}

/// Scoring is off the request path: a burst far larger than the scoring queue is
/// answered 204 promptly, what the queue cannot hold is counted as dropped (never
/// more than was sent), the lag is exported, and scoring catches up afterwards.
#[test]
fn a_burst_larger_than_the_scoring_queue_never_holds_up_ingest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        r#"groups:
  - name: burst
    detectors:
      - {name: hw, selector: '{job="burst"}', algorithm: holt_winters, season_samples: 8, outputs: [anomaly_score]}
      - {name: z, selector: '{job="burst"}', algorithm: zscore, outputs: [anomaly_score]}
      - {name: q, selector: '{job="burst"}', algorithm: iqr, outputs: [anomaly_score]}
    rules: []
"#,
    )
    .unwrap();
    let cl = Closedloop::start_in(
        dir,
        "rule_files: ['rules.yml']\nanomaly: {queue_samples: 1000}\n",
    );
    let names: Vec<String> = (0..2_000).map(|i| format!("i{i}")).collect();
    let end = now_ms() - 60_000;
    let rounds = 30usize;
    let mut slowest = Duration::ZERO;
    let mut sent = 0usize;
    for r in 0..rounds {
        let t = end - ((rounds - 1 - r) as i64) * 15_000;
        // The first round in one request of 2,000 samples (over the queue's 1,000:
        // dropped whole), then requests of 400 samples, faster than scoring.
        let per_request = if r == 0 { 2_000 } else { 400 };
        for part in names.chunks(per_request) {
            let samples: Vec<[(i64, f64); 1]> =
                (0..part.len()).map(|i| [(t, (i + r) as f64)]).collect();
            let labels: Vec<[(&str, &str); 3]> = part
                .iter()
                .map(|n| {
                    [
                        ("__name__", "burst_total"),
                        ("instance", n.as_str()),
                        ("job", "burst"),
                    ]
                })
                .collect();
            let series: Vec<TestSeries<'_>> = labels
                .iter()
                .zip(&samples)
                .map(|(l, s)| (&l[..], &s[..]))
                .collect();
            let start = std::time::Instant::now();
            let (status, text) = post_write(&cl, v1_body(&series), "application/x-protobuf");
            slowest = slowest.max(start.elapsed());
            assert_eq!(status, 204, "{text}");
            sent += part.len();
        }
    }
    // Generous for a loaded machine: a request only stores and queues.
    assert!(
        slowest < Duration::from_secs(10),
        "a request took {slowest:?}"
    );
    let sent = sent as f64;
    wait_until("the queue to drain", Duration::from_secs(120), || {
        cl.metric("closed_loop_anomaly_queue_samples", "") == 0.0
            && cl.metric("closed_loop_anomaly_samples_scored_total", "")
                + cl.metric("closed_loop_anomaly_samples_dropped_total", "")
                == sent
    });
    let dropped = cl.metric("closed_loop_anomaly_samples_dropped_total", "");
    assert!(
        dropped >= 2_000.0 && dropped < sent,
        "dropped {dropped} of {sent}"
    );
    // Scoring catches up: a request after the burst is scored (its scores appear).
    let t = end + 15_000;
    let samples: Vec<[(i64, f64); 1]> = (0..10).map(|i| [(t, i as f64)]).collect();
    let labels: Vec<[(&str, &str); 3]> = names[..10]
        .iter()
        .map(|n| {
            [
                ("__name__", "burst_total"),
                ("instance", n.as_str()),
                ("job", "burst"),
            ]
        })
        .collect();
    let series: Vec<TestSeries<'_>> = labels
        .iter()
        .zip(&samples)
        .map(|(l, s)| (&l[..], &s[..]))
        .collect();
    let (status, text) = post_write(&cl, v1_body(&series), "application/x-protobuf");
    assert_eq!(status, 204, "{text}");
    // The ten series' newest scores carry that request's timestamp.
    wait_until("the last request's scores", Duration::from_secs(60), || {
        let q = format!(
            "/api/v1/query?query=timestamp(anomaly_score%7Bdetector%3D%22z%22%2Cinstance%3D~%22i%5B0-9%5D%22%7D)&time={}",
            t as f64 / 1000.0
        );
        let got = cl.api(&q);
        let stamps: Vec<f64> = got["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse().ok())
            .collect();
        stamps.len() == 10 && stamps.iter().all(|&s| (s - t as f64 / 1000.0).abs() < 1e-3)
    });
    assert!(cl.metric("closed_loop_anomaly_scoring_lag_seconds_count", "") >= 1.0);
}
