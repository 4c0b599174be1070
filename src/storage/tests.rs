use super::*;

fn store() -> Store {
    Store::new(StoreConfig {
        retention_ms: 3_600_000,
        max_series: 100,
        shards: 4,
        ..StoreConfig::default()
    })
}

fn ls(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::from_pairs(pairs.iter().copied())
}

fn names(store: &Store, matchers: &[Matcher]) -> Vec<String> {
    store
        .series(matchers, i64::MIN, i64::MAX)
        .iter()
        .map(|l| l.to_string())
        .collect()
}

fn fixture() -> Store {
    let s = store();
    for (i, (job, inst)) in [("api", "a"), ("api", "b"), ("web", "a"), ("db", "")]
        .iter()
        .enumerate()
    {
        s.append(
            &ls(&[("__name__", "up"), ("job", job), ("instance", inst)]),
            1000,
            i as f64,
        )
        .unwrap();
    }
    s.append(&ls(&[("__name__", "other"), ("job", "api")]), 1000, 9.0)
        .unwrap();
    s
}

#[test]
fn equality_and_regex_matchers() {
    let s = fixture();
    let up = Matcher::equal("__name__", "up");
    assert_eq!(
        names(&s, &[up.clone(), Matcher::equal("job", "api")]),
        vec![
            r#"up{instance="a", job="api"}"#,
            r#"up{instance="b", job="api"}"#
        ]
    );
    assert_eq!(
        names(
            &s,
            &[
                up.clone(),
                Matcher::new(MatchOp::Regex, "job", "w.*|d.").unwrap()
            ]
        )
        .len(),
        2
    );
    assert_eq!(
        names(
            &s,
            &[
                up.clone(),
                Matcher::new(MatchOp::NotRegex, "job", "api").unwrap()
            ]
        )
        .len(),
        2
    );
    assert_eq!(
        names(
            &s,
            &[up, Matcher::new(MatchOp::NotEqual, "job", "api").unwrap()]
        )
        .len(),
        2
    );
}

#[test]
fn empty_matchers_select_series_missing_the_label() {
    let s = fixture();
    let up = Matcher::equal("__name__", "up");
    // instance="" matches the db series, which has no instance label.
    assert_eq!(
        names(&s, &[up.clone(), Matcher::equal("instance", "")]),
        vec![r#"up{job="db"}"#]
    );
    // instance!="" matches only series that have the label.
    assert_eq!(
        names(
            &s,
            &[
                up.clone(),
                Matcher::new(MatchOp::NotEqual, "instance", "").unwrap()
            ]
        )
        .len(),
        3
    );
    // instance=~"a|" matches "a" and the missing label.
    assert_eq!(
        names(
            &s,
            &[
                up.clone(),
                Matcher::new(MatchOp::Regex, "instance", "a|").unwrap()
            ]
        )
        .len(),
        3
    );
    // A label nobody has, matched against "": every up series.
    assert_eq!(
        names(
            &s,
            &[up, Matcher::new(MatchOp::Regex, "zone", ".*").unwrap()]
        )
        .len(),
        4
    );
    // Only "matches empty" matchers: the index falls back to all series.
    assert_eq!(
        names(
            &s,
            &[Matcher::new(MatchOp::NotEqual, "job", "api").unwrap()]
        )
        .len(),
        2
    );
}

#[test]
fn time_range_filters_series() {
    let s = store();
    s.append(&ls(&[("__name__", "a")]), 1_000, 1.0).unwrap();
    s.append(&ls(&[("__name__", "b")]), 5_000, 1.0).unwrap();
    let m = [Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap()];
    assert_eq!(s.series(&m, 0, 2_000).len(), 1);
    assert_eq!(s.series(&m, 0, 10_000).len(), 2);
    let sel = s.select(&m, 4_000, 6_000);
    assert_eq!(sel.len(), 1);
    assert_eq!(sel[0].timestamps, vec![5_000]);
}

#[test]
fn series_limit_rejects_new_series_only() {
    let s = Store::new(StoreConfig {
        retention_ms: 1000,
        max_series: 2,
        shards: 2,
        ..StoreConfig::default()
    });
    s.append(&ls(&[("__name__", "a")]), 1, 1.0).unwrap();
    s.append(&ls(&[("__name__", "b")]), 1, 1.0).unwrap();
    assert_eq!(
        s.append(&ls(&[("__name__", "c")]), 1, 1.0),
        Err(AppendError::SeriesLimit)
    );
    assert_eq!(
        s.append(&ls(&[("__name__", "a")]), 2, 2.0),
        Ok(Appended::Stored)
    );
    assert_eq!(s.series_count(), 2);
}

#[test]
fn gc_drops_idle_series_and_frees_their_slots() {
    let s = store();
    s.append(&ls(&[("__name__", "old"), ("x", "1")]), 0, 1.0)
        .unwrap();
    s.append(&ls(&[("__name__", "new")]), 3_000_000, 1.0)
        .unwrap();
    assert_eq!(s.gc(3_700_000).len(), 1);
    assert_eq!(s.series_count(), 1);
    let all = [Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap()];
    assert_eq!(names(&s, &all), vec!["new{}"]);
    assert!(s
        .label_names(None, i64::MIN, i64::MAX)
        .iter()
        .all(|n| &**n != "x"));
    // The slot is reused and the index stays consistent.
    s.append(&ls(&[("__name__", "again"), ("x", "2")]), 3_700_000, 1.0)
        .unwrap();
    assert_eq!(
        names(&s, &[Matcher::equal("x", "2")]),
        vec![r#"again{x="2"}"#]
    );
}

#[test]
fn batch_append_reports_partial_rejections() {
    let s = store();
    let a = [("__name__", "a")];
    let b = [("__name__", "b")];
    s.append_batch(&[SeriesWrite {
        labels: &a,
        samples: &[(10, 1.0)],
    }]);
    let stats = s.append_batch(&[
        SeriesWrite {
            labels: &a,
            samples: &[(5, 1.0), (10, 2.0), (20, 3.0)],
        },
        SeriesWrite {
            labels: &b,
            samples: &[(1, 1.0), (2, 2.0)],
        },
    ]);
    assert_eq!(stats.samples_stored, 3);
    assert_eq!(stats.out_of_order, 1);
    assert_eq!(stats.duplicate_timestamp, 1);
    assert_eq!(stats.series_created, 1);
    let sel = s.select(&[Matcher::equal("__name__", "a")], 0, 100);
    assert_eq!(sel[0].timestamps, vec![10, 20]);
}

#[test]
fn label_names_and_values() {
    let s = fixture();
    let names: Vec<String> = s
        .label_names(None, i64::MIN, i64::MAX)
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(names, vec!["__name__", "instance", "job"]);
    let jobs: Vec<String> = s
        .label_values("job", None, i64::MIN, i64::MAX)
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(jobs, vec!["api", "db", "web"]);
    let m = [Matcher::equal("__name__", "other")];
    let jobs: Vec<String> = s
        .label_values("job", Some(&m), i64::MIN, i64::MAX)
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(jobs, vec!["api"]);
}

#[test]
fn concurrent_writers_and_readers() {
    let s = std::sync::Arc::new(Store::new(StoreConfig {
        retention_ms: i64::MAX,
        max_series: 10_000,
        shards: 8,
        ..StoreConfig::default()
    }));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                for t in 0..200 {
                    for i in 0..50 {
                        let inst = format!("{w}-{i}");
                        s.append(&ls(&[("__name__", "m"), ("i", &inst)]), t, t as f64)
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    let reader = {
        let s = s.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                for series in s.select(&[Matcher::equal("__name__", "m")], 0, i64::MAX) {
                    assert!(series.timestamps.windows(2).all(|w| w[0] < w[1]));
                }
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    assert_eq!(s.series_count(), 200);
    assert_eq!(s.stats().samples, 200 * 200);
}

#[test]
fn a_series_without_samples_is_never_created() {
    let s = store();
    let stats = s.append_batch(&[SeriesWrite {
        labels: &[("__name__", "empty")],
        samples: &[],
    }]);
    assert_eq!(stats, AppendStats::default());
    assert_eq!(s.series_count(), 0);
}

#[test]
fn series_keys_match_exactly() {
    let pairs = [("__name__", "up"), ("job", "a")];
    let key = series_key(&pairs);
    assert!(key_matches(&key, &pairs));
    assert!(!key_matches(&key, &[("__name__", "up")]));
    assert!(!key_matches(&key, &[("__name__", "up"), ("job", "ab")]));
    assert!(!key_matches(&key, &[("__name__", "up"), ("jo", "ba")]));
    assert!(!key_matches(
        &key,
        &[("__name__", "up"), ("job", "a"), ("x", "y")]
    ));
}

#[test]
fn colliding_hashes_keep_series_apart() {
    // Force a collision by appending through the shard internals with one hash.
    let s = store();
    let a = [("__name__", "a")];
    let b = [("__name__", "b")];
    let mut shard = s.shards[0].write();
    let mut stats = AppendStats::default();
    s.append_series(
        &mut shard,
        42,
        &SeriesWrite {
            labels: &a,
            samples: &[(1, 1.0)],
        },
        100,
        &mut stats,
    );
    s.append_series(
        &mut shard,
        42,
        &SeriesWrite {
            labels: &b,
            samples: &[(1, 2.0)],
        },
        100,
        &mut stats,
    );
    s.append_series(
        &mut shard,
        42,
        &SeriesWrite {
            labels: &b,
            samples: &[(2, 3.0)],
        },
        100,
        &mut stats,
    );
    assert_eq!(stats.series_created, 2);
    assert_eq!(
        find_slot(&shard, 42, &b).map(|x| shard.slots[x as usize].as_ref().unwrap().window.len()),
        Some(2)
    );
    // Removing the first promotes the colliding one.
    let first = find_slot(&shard, 42, &a).unwrap();
    remove_series(&mut shard, first);
    assert!(find_slot(&shard, 42, &a).is_none());
    assert!(find_slot(&shard, 42, &b).is_some());
    assert!(shard.collisions.is_empty());
}

#[test]
fn handles_append_directly_and_go_stale_when_the_series_is_removed() {
    let s = store();
    let pairs = [("__name__", "out"), ("detector", "z")];
    let mut handle = None;
    s.append_batch_observed(
        &[SeriesWrite {
            labels: &pairs,
            samples: &[(1_000, 1.0)],
        }],
        &mut |_, r, _| handle = Some(r),
    );
    let handle = handle.unwrap();
    let mut stale = Vec::new();
    let stats = s.append_refs(&[(handle, 2_000, 2.0), (handle, 1_500, 9.0)], &mut stale);
    assert_eq!((stats.samples_stored, stats.out_of_order), (1, 1));
    assert!(stale.is_empty());
    assert_eq!(
        s.select(&[Matcher::equal("__name__", "out")], 0, i64::MAX)[0].values,
        vec![1.0, 2.0]
    );
    // Removed by GC, its slot reused by another series: the handle is stale.
    assert_eq!(s.gc(10_000_000).len(), 1);
    s.append(&ls(&[("__name__", "other")]), 10_000_000, 1.0)
        .unwrap();
    let stats = s.append_refs(&[(handle, 10_000_001, 3.0)], &mut stale);
    assert_eq!((stats.samples_stored, stale), (0, vec![0]));
    assert_eq!(
        s.select(&[Matcher::equal("__name__", "other")], 0, i64::MAX)[0].values,
        vec![1.0]
    );
}

/// Every selection path (postings difference/intersection and per-series checks)
/// agrees with a brute-force evaluation of the matchers.
#[test]
fn selection_agrees_with_brute_force() {
    let s = Store::new(StoreConfig {
        retention_ms: i64::MAX,
        max_series: 10_000,
        shards: 2,
        ..StoreConfig::default()
    });
    let mut all = Vec::new();
    for i in 0..600 {
        let mut pairs = vec![
            ("__name__", format!("m{}", i % 3)),
            ("job", format!("j{}", i % 5)),
        ];
        if i % 7 != 0 {
            pairs.push(("zone", format!("z{}", i % 4)));
        }
        pairs.push(("inst", format!("i{i}")));
        let labels = LabelSet::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_str())));
        s.append(&labels, 1, 1.0).unwrap();
        all.push(labels);
    }
    let cases: Vec<Vec<Matcher>> = vec![
        vec![
            Matcher::equal("__name__", "m1"),
            Matcher::new(MatchOp::NotEqual, "job", "j1").unwrap(),
        ],
        vec![
            Matcher::equal("__name__", "m1"),
            Matcher::new(MatchOp::NotRegex, "zone", "z1|z2").unwrap(),
        ],
        vec![
            Matcher::equal("__name__", "m1"),
            Matcher::new(MatchOp::Regex, "zone", "z[01]").unwrap(),
        ],
        vec![Matcher::equal("__name__", "m2"), Matcher::equal("zone", "")],
        vec![
            Matcher::equal("__name__", "m2"),
            Matcher::new(MatchOp::Regex, "zone", "|z3").unwrap(),
        ],
        vec![
            Matcher::equal("__name__", "m0"),
            Matcher::new(MatchOp::Regex, "inst", "i1.*").unwrap(),
        ],
        vec![
            Matcher::new(MatchOp::Regex, "job", "j[0-3]").unwrap(),
            Matcher::new(MatchOp::NotEqual, "zone", "z0").unwrap(),
        ],
    ];
    for matchers in cases {
        let mut want: Vec<String> = all
            .iter()
            .filter(|l| {
                matchers
                    .iter()
                    .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
            })
            .map(|l| l.to_string())
            .collect();
        want.sort();
        let mut got = names(&s, &matchers);
        got.sort();
        assert_eq!(got, want, "{matchers:?}");
    }
}

/// The retention window through the store: older samples are gone, the rest intact,
/// across chunk boundaries, both as samples arrive and after GC.
#[test]
fn retention_across_chunk_boundaries() {
    let retention = 2 * 3600 * 1000;
    let s = Store::new(StoreConfig {
        retention_ms: retention,
        max_series: 10,
        shards: 1,
        ..StoreConfig::default()
    });
    let m = [Matcher::equal("__name__", "r")];
    let labels = ls(&[("__name__", "r")]);
    // 1,000 samples at 15 s: about 4 h 10 min, eight chunks and more.
    for i in 0..1_000i64 {
        s.append(&labels, i * 15_000, i as f64).unwrap();
    }
    let newest = 999 * 15_000;
    let got = &s.select(&m, i64::MIN, i64::MAX)[0];
    let first = (newest - retention) / 15_000;
    assert_eq!(got.timestamps.len(), (999 - first + 1) as usize);
    assert_eq!(got.timestamps[0], first * 15_000);
    assert!(got
        .timestamps
        .iter()
        .zip(&got.values)
        .all(|(&t, &v)| v == (t / 15_000) as f64));
    // A range that starts and ends inside closed chunks.
    let part = &s.select(&m, 700 * 15_000 + 1, 850 * 15_000)[0];
    assert_eq!(part.timestamps.first(), Some(&(701 * 15_000)));
    assert_eq!(part.timestamps.last(), Some(&(850 * 15_000)));
    assert_eq!(part.timestamps.len(), 150);
    // GC an hour later: the window's older half is gone, memory with it.
    let before = s.stats();
    assert!(s.gc(newest + 3_600_000).is_empty());
    let got = &s.select(&m, i64::MIN, i64::MAX)[0];
    assert_eq!(got.timestamps[0], (first + 240) * 15_000);
    assert_eq!(got.timestamps.last(), Some(&newest));
    let after = s.stats();
    assert!(after.samples < before.samples && after.bytes < before.bytes);
    // Past the whole window, the series is removed.
    assert_eq!(s.gc(newest + retention + 1).len(), 1);
    assert!(s.select(&m, i64::MIN, i64::MAX).is_empty());
}

proptest::proptest! {
    /// Any sample sequence (NaN payloads, ±Inf, staleness markers, equal values, huge
    /// deltas, negative timestamps) reads back bit for bit through the store.
    #[test]
    fn samples_round_trip_through_select(
        steps in proptest::collection::vec(
            (
                proptest::prop_oneof![
                    proptest::strategy::Just(15_000i64),
                    1i64..1_000,
                    1i64..(1i64 << 50),
                ],
                proptest::prop_oneof![
                    proptest::prelude::any::<u64>(),
                    proptest::strategy::Just(STALE_NAN_BITS),
                    proptest::strategy::Just(f64::INFINITY.to_bits()),
                    proptest::strategy::Just(f64::NEG_INFINITY.to_bits()),
                    proptest::strategy::Just(1.0f64.to_bits()),
                ],
            ),
            1..600,
        ),
        start in (i64::MIN / 4)..(i64::MAX / 4),
    ) {
        let s = Store::new(StoreConfig {
            retention_ms: i64::MAX,
            max_series: 10,
            shards: 1,
            ..StoreConfig::default()
        });
        let pairs = [("__name__", "p")];
        let mut t = start;
        let mut want = Vec::new();
        for (i, (dt, bits)) in steps.into_iter().enumerate() {
            if i > 0 {
                t += dt;
            }
            want.push((t, bits));
        }
        let samples: Vec<(i64, f64)> = want.iter().map(|&(t, b)| (t, f64::from_bits(b))).collect();
        // In pieces, as remote-write requests would bring them.
        for part in samples.chunks(37) {
            let stats = s.append_batch(&[SeriesWrite { labels: &pairs, samples: part }]);
            proptest::prop_assert_eq!(stats.samples_stored, part.len() as u64);
        }
        let got = s.select(&[Matcher::equal("__name__", "p")], i64::MIN, i64::MAX);
        let got: Vec<(i64, u64)> = got[0]
            .timestamps
            .iter()
            .zip(&got[0].values)
            .map(|(&t, v)| (t, v.to_bits()))
            .collect();
        proptest::prop_assert_eq!(got, want);
    }
}

#[test]
fn max_bytes_refuses_new_series_only() {
    let s = Store::new(StoreConfig {
        retention_ms: i64::MAX,
        max_series: 100_000,
        shards: 4,
        max_bytes: Some(64 << 10),
    });
    let mut created = 0;
    let mut refused = None;
    for i in 0..10_000 {
        let inst = format!("instance-{i}");
        match s.append(&ls(&[("__name__", "m"), ("instance", &inst)]), 1_000, 1.0) {
            Ok(_) => created += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(refused, Some(AppendError::MemoryLimit));
    assert!(created > 10, "{created}");
    assert!(
        s.bytes() >= 64 << 10 && s.bytes() < (64 << 10) + 4096,
        "{}",
        s.bytes()
    );
    // Existing series keep appending.
    assert_eq!(
        s.append(
            &ls(&[("__name__", "m"), ("instance", "instance-0")]),
            2_000,
            2.0
        ),
        Ok(Appended::Stored)
    );
    assert_eq!(s.series_count(), created);
}

/// The running byte count (what `max_bytes` checks) and the walked total
/// (`closedloop_store_bytes`) agree on everything the series hold, through
/// creation, appends, retention and removal.
#[test]
fn running_byte_count_follows_the_series() {
    let s = Store::new(StoreConfig {
        retention_ms: 600_000,
        max_series: 100_000,
        shards: 4,
        ..StoreConfig::default()
    });
    let walked_series_bytes = |s: &Store| -> usize {
        s.shards
            .iter()
            .map(|sh| {
                sh.read()
                    .slots
                    .iter()
                    .flatten()
                    .map(Series::accounted_bytes)
                    .sum::<usize>()
            })
            .sum()
    };
    for t in 0..200i64 {
        for i in 0..50 {
            let inst = format!("{i}");
            s.append(
                &ls(&[("__name__", "m"), ("i", &inst)]),
                t * 15_000,
                (t * i) as f64,
            )
            .unwrap();
        }
    }
    let running = s.series_bytes.load(Ordering::Relaxed) as usize;
    assert_eq!(running, walked_series_bytes(&s));
    assert!(s.stats().bytes >= running);
    s.gc(200 * 15_000 + 300_000);
    assert_eq!(
        s.series_bytes.load(Ordering::Relaxed) as usize,
        walked_series_bytes(&s)
    );
    assert_eq!(s.gc(10_000_000).len(), 50);
    assert_eq!(s.series_bytes.load(Ordering::Relaxed), 0);
}

/// Dropping 100,000 series that share their labels is one pass per postings list,
/// and leaves the index consistent for the survivors.
#[test]
fn mass_removal_keeps_the_index_consistent() {
    let s = Store::new(StoreConfig {
        retention_ms: 1_000,
        max_series: 200_000,
        shards: 4,
        ..StoreConfig::default()
    });
    let mut pairs_store = Vec::new();
    for i in 0..100_000 {
        pairs_store.push((format!("{}", i % 7), format!("{i}")));
    }
    let writes: Vec<[(&str, &str); 4]> = pairs_store
        .iter()
        .map(|(z, i)| {
            [
                ("__name__", "m"),
                ("i", i.as_str()),
                ("job", "api"),
                ("zone", z.as_str()),
            ]
        })
        .collect();
    let samples = [(0i64, 1.0)];
    let batch: Vec<SeriesWrite<'_>> = writes
        .iter()
        .map(|l| SeriesWrite {
            labels: l,
            samples: &samples,
        })
        .collect();
    s.append_batch(&batch);
    s.append(
        &ls(&[("__name__", "m"), ("job", "api"), ("i", "keep")]),
        5_000,
        1.0,
    )
    .unwrap();
    let start = std::time::Instant::now();
    assert_eq!(s.gc(5_000).len(), 100_000);
    // Generous for a loaded machine; one shift per removed series took minutes.
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        names(&s, &[Matcher::equal("job", "api")]),
        vec![r#"m{i="keep", job="api"}"#]
    );
    assert!(s.label_values("zone", None, i64::MIN, i64::MAX).is_empty());
}
