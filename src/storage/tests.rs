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
