//! The Kubernetes and Argo Rollouts actuators against the API double, through the
//! production `kube` client built from a kubeconfig file; and the RBAC manifest
//! against the permission table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prometheus::IntCounter;
use serde_json::{json, Value};

use super::*;
use crate::act::argo::RolloutsActuator;
use crate::act::retry::RetryPolicy;
use crate::act::testing::{fixtures, Fault, KubeDouble, Recorded};
use crate::act::{Actuator, ReplicaBounds, ReplicaChange};
use crate::knowledge::IntentReceipt;

fn approved(a: Action) -> Approved {
    Approved::new(a, IntentReceipt::for_test(1))
}

fn oref(kind: ObjectKind, ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: ns.into(),
        name: name.into(),
    }
}

struct Setup {
    double: KubeDouble,
    kube: KubeActuator,
    rollouts: RolloutsActuator,
    retries: IntCounter,
}

async fn setup() -> Setup {
    let double = KubeDouble::start();
    let retries = IntCounter::new("retries", "retries").unwrap();
    let retry = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let api = KubeApi::connect(&double.config(), retry, retries.clone())
        .await
        .expect("a client from the double's kubeconfig");
    Setup {
        kube: KubeActuator::new(api.clone()),
        rollouts: RolloutsActuator::new(api),
        double,
        retries,
    }
}

impl Setup {
    async fn run(&self, a: Action) -> Result<Effect, ActError> {
        let approved = approved(a);
        if self.kube.handles(approved.action()) {
            self.kube.execute(&approved).await
        } else {
            self.rollouts.execute(&approved).await
        }
    }

    /// The requests since the last call, without the GETs.
    fn writes(&self) -> Vec<Recorded> {
        let r = self.double.requests();
        self.double.clear_requests();
        r.into_iter().filter(|r| r.method != "GET").collect()
    }
}

#[tokio::test]
async fn restart_pod_deletes_it_with_the_uid_precondition() {
    let s = setup().await;
    s.double.insert(fixtures::pod("prod", "web-1", "uid-1"));
    let pod = oref(ObjectKind::Pod, "prod", "web-1");
    let e = s
        .run(Action::RestartPod {
            pod: pod.clone(),
            uid: Some("uid-1".into()),
        })
        .await
        .unwrap();
    assert!(
        e.summary.contains("deleted pod prod/pod/web-1"),
        "{}",
        e.summary
    );
    assert_eq!(e.undo, None);
    assert!(s.double.get("pods", "prod", "web-1").is_none());
    let w = s.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(
        (w[0].method.as_str(), w[0].path.as_str()),
        ("DELETE", "/api/v1/namespaces/prod/pods/web-1")
    );
    assert_eq!(w[0].body["preconditions"]["uid"], "uid-1");
}

#[tokio::test]
async fn restart_pod_never_hits_a_different_pod_of_the_same_name() {
    let s = setup().await;
    s.double.insert(fixtures::pod("prod", "db-0", "uid-new"));
    let r = s
        .run(Action::RestartPod {
            pod: oref(ObjectKind::Pod, "prod", "db-0"),
            uid: Some("uid-old".into()),
        })
        .await;
    match r {
        Err(ActError::NotFound(m)) => assert!(m.contains("UID precondition"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        s.double.get("pods", "prod", "db-0").is_some(),
        "the new pod is untouched"
    );
    let missing = s
        .run(Action::RestartPod {
            pod: oref(ObjectKind::Pod, "prod", "nope"),
            uid: None,
        })
        .await;
    assert!(matches!(missing, Err(ActError::NotFound(_))), "{missing:?}");
}

#[tokio::test]
async fn a_pod_delete_without_uid_is_not_retried_after_a_5xx() {
    let s = setup().await;
    s.double.insert(fixtures::pod("prod", "web-1", "uid-1"));
    s.double.inject(Fault {
        method: axum::http::Method::DELETE,
        path_suffix: "/pods/web-1".into(),
        status: 503,
        times: 1,
    });
    let r = s
        .run(Action::RestartPod {
            pod: oref(ObjectKind::Pod, "prod", "web-1"),
            uid: None,
        })
        .await;
    assert!(
        matches!(r, Err(ActError::Unavailable { attempts: 1, .. })),
        "{r:?}"
    );
    assert_eq!(s.writes().len(), 1);
    // With the UID the same failure is retried.
    s.double.inject(Fault {
        method: axum::http::Method::DELETE,
        path_suffix: "/pods/web-1".into(),
        status: 503,
        times: 1,
    });
    s.run(Action::RestartPod {
        pod: oref(ObjectKind::Pod, "prod", "web-1"),
        uid: Some("uid-1".into()),
    })
    .await
    .unwrap();
    assert_eq!(s.writes().len(), 2);
    assert_eq!(s.retries.get(), 1);
}

#[tokio::test]
async fn rollout_restart_patches_the_template_annotation_like_kubectl() {
    let s = setup().await;
    s.double
        .insert(fixtures::deployment("prod", "web", 3, "web:2", 2));
    s.double.insert(fixtures::statefulset("prod", "db", 3));
    s.double.insert(fixtures::daemonset("prod", "agent"));
    for (kind, plural, name) in [
        (ObjectKind::Deployment, "deployments", "web"),
        (ObjectKind::StatefulSet, "statefulsets", "db"),
        (ObjectKind::DaemonSet, "daemonsets", "agent"),
    ] {
        let e = s
            .run(Action::RolloutRestart {
                workload: oref(kind, "prod", name),
            })
            .await
            .unwrap();
        let at = e.details["restarted_at"].as_str().unwrap().to_owned();
        assert!(
            at.ends_with('Z') && at.len() == 20,
            "RFC 3339 seconds: {at}"
        );
        let w = s.writes();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].method, "PATCH");
        assert_eq!(
            w[0].path,
            format!("/apis/apps/v1/namespaces/prod/{plural}/{name}")
        );
        assert_eq!(
            w[0].content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
        assert_eq!(
            w[0].body,
            json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}})
        );
        let stored = s.double.get(plural, "prod", name).unwrap();
        assert_eq!(
            stored["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            at
        );
        assert_eq!(stored["metadata"]["generation"], 2);
    }
    let pod = s
        .run(Action::RolloutRestart {
            workload: oref(ObjectKind::Pod, "prod", "web-1"),
        })
        .await;
    assert!(matches!(pod, Err(ActError::Invalid(_))), "{pod:?}");
}

#[tokio::test]
async fn scale_goes_through_the_scale_subresource_within_bounds() {
    let s = setup().await;
    s.double
        .insert(fixtures::deployment("prod", "web", 3, "web:2", 2));
    let web = oref(ObjectKind::Deployment, "prod", "web");
    let bounds = ReplicaBounds { min: 2, max: 4 };
    let e = s
        .run(Action::Scale {
            workload: web.clone(),
            change: ReplicaChange::By(2),
            bounds,
        })
        .await
        .unwrap();
    assert_eq!(e.summary, "scaled prod/deployment/web 3 -> 4");
    let reqs = s.double.requests();
    s.double.clear_requests();
    let shape: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("GET", "/apis/apps/v1/namespaces/prod/deployments/web/scale"),
            ("PUT", "/apis/apps/v1/namespaces/prod/deployments/web/scale"),
        ]
    );
    let put = &reqs[1];
    assert_eq!(put.content_type.as_deref(), Some("application/json"));
    assert_eq!(put.body["kind"], "Scale");
    assert_eq!(put.body["apiVersion"], "autoscaling/v1");
    assert_eq!(put.body["spec"]["replicas"], 4);
    assert!(put.body["metadata"]["resourceVersion"].is_string());
    assert_eq!(
        s.double.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
        4
    );
    // The undo puts the previous count back.
    let undo = e.undo.clone().unwrap();
    assert_eq!(
        undo,
        Action::Scale {
            workload: web.clone(),
            change: ReplicaChange::To(3),
            bounds,
        }
    );
    s.run(undo).await.unwrap();
    assert_eq!(
        s.double.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
        3
    );
    // Clamped to the bounds; at the bound already: no write.
    let e = s
        .run(Action::Scale {
            workload: web.clone(),
            change: ReplicaChange::To(50),
            bounds,
        })
        .await
        .unwrap();
    assert_eq!(e.details["replicas"], 4);
    s.double.clear_requests();
    let e = s
        .run(Action::Scale {
            workload: web.clone(),
            change: ReplicaChange::By(1),
            bounds,
        })
        .await
        .unwrap();
    assert!(e.summary.contains("already has 4"), "{}", e.summary);
    assert_eq!(e.undo, None);
    assert!(s.writes().is_empty());
    // StatefulSets scale the same way; DaemonSets have no scale.
    s.double.insert(fixtures::statefulset("prod", "db", 3));
    s.run(Action::Scale {
        workload: oref(ObjectKind::StatefulSet, "prod", "db"),
        change: ReplicaChange::By(-1),
        bounds: ReplicaBounds { min: 1, max: 5 },
    })
    .await
    .unwrap();
    assert_eq!(
        s.double.get("statefulsets", "prod", "db").unwrap()["spec"]["replicas"],
        2
    );
    let ds = s
        .run(Action::Scale {
            workload: oref(ObjectKind::DaemonSet, "prod", "agent"),
            change: ReplicaChange::By(1),
            bounds,
        })
        .await;
    assert!(matches!(ds, Err(ActError::Invalid(_))), "{ds:?}");
    let bad = s
        .run(Action::Scale {
            workload: web,
            change: ReplicaChange::By(1),
            bounds: ReplicaBounds { min: 5, max: 2 },
        })
        .await;
    assert!(matches!(bad, Err(ActError::Invalid(_))), "{bad:?}");
}

#[tokio::test]
async fn scale_resolves_a_conflict_by_reading_again() {
    let s = setup().await;
    s.double
        .insert(fixtures::deployment("prod", "web", 3, "web:2", 2));
    s.double.inject(Fault {
        method: axum::http::Method::PUT,
        path_suffix: "/deployments/web/scale".into(),
        status: 409,
        times: 1,
    });
    // And a transient 503 on the second read, retried.
    s.run(Action::Scale {
        workload: oref(ObjectKind::Deployment, "prod", "web"),
        change: ReplicaChange::By(1),
        bounds: ReplicaBounds { min: 1, max: 10 },
    })
    .await
    .unwrap();
    let shape: Vec<(String, u16)> = s
        .double
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    let expect = [("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 200)];
    assert_eq!(
        shape,
        expect.map(|(m, c)| (m.to_owned(), c)),
        "read, conflict, read again, write"
    );
    assert_eq!(
        s.double.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
        4
    );
}

#[tokio::test]
async fn transient_errors_are_retried_and_then_reported_unavailable() {
    let s = setup().await;
    s.double
        .insert(fixtures::deployment("prod", "web", 3, "web:2", 2));
    s.double.inject(Fault {
        method: axum::http::Method::GET,
        path_suffix: "/deployments/web/scale".into(),
        status: 503,
        times: 2,
    });
    let web = oref(ObjectKind::Deployment, "prod", "web");
    let scale = |n| Action::Scale {
        workload: web.clone(),
        change: ReplicaChange::To(n),
        bounds: ReplicaBounds { min: 1, max: 10 },
    };
    s.run(scale(5)).await.unwrap();
    assert_eq!(s.retries.get(), 2);
    s.double.inject(Fault {
        method: axum::http::Method::GET,
        path_suffix: "/deployments/web/scale".into(),
        status: 500,
        times: 3,
    });
    match s.run(scale(6)).await {
        Err(ActError::Unavailable { attempts, reason }) => {
            assert_eq!(attempts, 3);
            assert!(reason.contains("500"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.double.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
        5
    );
}

#[tokio::test]
async fn configmap_keys_are_patched_and_the_previous_values_recorded() {
    let s = setup().await;
    s.double.insert(fixtures::configmap(
        "prod",
        "flags",
        &[("provider", "a"), ("rate_limit", "100"), ("keep", "x")],
    ));
    let cm = oref(ObjectKind::ConfigMap, "prod", "flags");
    let data: BTreeMap<String, Option<String>> = [
        ("provider".to_string(), Some("b".to_string())),
        ("rate_limit".to_string(), None),
        ("degraded".to_string(), Some("true".to_string())),
    ]
    .into();
    let e = s
        .run(Action::PatchConfigMap {
            configmap: cm.clone(),
            data: data.clone(),
        })
        .await
        .unwrap();
    let w = s.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].path, "/api/v1/namespaces/prod/configmaps/flags");
    assert_eq!(
        w[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        w[0].body["data"],
        json!({"provider": "b", "rate_limit": null, "degraded": "true"})
    );
    assert!(w[0].body["metadata"]["resourceVersion"].is_string());
    let stored = s.double.get("configmaps", "prod", "flags").unwrap();
    assert_eq!(
        stored["data"],
        json!({"provider": "b", "degraded": "true", "keep": "x"})
    );
    let undo = e.undo.unwrap();
    assert_eq!(
        undo,
        Action::PatchConfigMap {
            configmap: cm.clone(),
            data: [
                ("provider".to_string(), Some("a".to_string())),
                ("rate_limit".to_string(), Some("100".to_string())),
                ("degraded".to_string(), None),
            ]
            .into(),
        }
    );
    s.run(undo).await.unwrap();
    let stored = s.double.get("configmaps", "prod", "flags").unwrap();
    assert_eq!(
        stored["data"],
        json!({"provider": "a", "rate_limit": "100", "keep": "x"})
    );
    // Already as asked: nothing written, nothing to undo.
    s.double.clear_requests();
    let e = s
        .run(Action::PatchConfigMap {
            configmap: cm,
            data: [("keep".to_string(), Some("x".to_string()))].into(),
        })
        .await
        .unwrap();
    assert_eq!(e.undo, None);
    assert!(s.writes().is_empty());
}

#[tokio::test]
async fn cordon_and_uncordon_patch_spec_unschedulable() {
    let s = setup().await;
    s.double.insert(fixtures::node("node-1"));
    let e = s
        .run(Action::CordonNode {
            node: "node-1".into(),
            cordon: true,
        })
        .await
        .unwrap();
    let w = s.writes();
    assert_eq!(w[0].path, "/api/v1/nodes/node-1");
    assert_eq!(
        w[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(w[0].body, json!({"spec": {"unschedulable": true}}));
    assert_eq!(
        s.double.get("nodes", "", "node-1").unwrap()["spec"]["unschedulable"],
        true
    );
    // Cordoning again changes nothing.
    let again = s
        .run(Action::CordonNode {
            node: "node-1".into(),
            cordon: true,
        })
        .await
        .unwrap();
    assert_eq!(again.undo, None);
    assert!(s.writes().is_empty());
    let undo = e.undo.unwrap();
    assert_eq!(
        undo,
        Action::CordonNode {
            node: "node-1".into(),
            cordon: false
        }
    );
    s.run(undo).await.unwrap();
    assert_eq!(s.writes()[0].body, json!({"spec": {"unschedulable": null}}));
    assert!(s.double.get("nodes", "", "node-1").unwrap()["spec"]
        .get("unschedulable")
        .is_none());
}

#[tokio::test]
async fn a_forbidden_request_names_the_missing_permission() {
    let s = setup().await;
    s.double.insert(fixtures::pod("prod", "web-1", "uid-1"));
    let without: Vec<Permission> = PERMISSIONS
        .iter()
        .copied()
        .filter(|p| *p != perm::PODS_DELETE)
        .collect();
    s.double.set_rules(&without);
    match s
        .run(Action::RestartPod {
            pod: oref(ObjectKind::Pod, "prod", "web-1"),
            uid: Some("uid-1".into()),
        })
        .await
    {
        Err(ActError::Refused(m)) => {
            assert!(
                m.contains("delete core/pods") && m.contains("forbidden"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(s.double.get("pods", "prod", "web-1").is_some());
}

#[tokio::test]
async fn argo_abort_and_retry_patch_the_status_subresource() {
    let s = setup().await;
    s.double
        .insert(fixtures::rollout("prod", "web", "web:2", 2));
    let ro = oref(ObjectKind::Rollout, "prod", "web");
    let e = s
        .run(Action::RolloutAbort {
            rollout: ro.clone(),
        })
        .await
        .unwrap();
    let w = s.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].path,
        "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/web/status"
    );
    assert_eq!(
        w[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(w[0].body, json!({"status": {"abort": true}}));
    assert_eq!(
        s.double.get("rollouts", "prod", "web").unwrap()["status"]["abort"],
        true
    );
    assert_eq!(
        e.undo,
        Some(Action::RolloutRetry {
            rollout: ro.clone()
        })
    );
    let e = s
        .run(Action::RolloutRetry {
            rollout: ro.clone(),
        })
        .await
        .unwrap();
    assert_eq!(s.writes()[0].body, json!({"status": {"abort": false}}));
    assert_eq!(
        s.double.get("rollouts", "prod", "web").unwrap()["status"]["abort"],
        false
    );
    assert_eq!(e.undo, Some(Action::RolloutAbort { rollout: ro }));
}

#[tokio::test]
async fn argo_abort_falls_back_to_the_rollout_without_a_status_subresource() {
    let s = setup().await;
    s.double.without_rollout_status_subresource();
    s.double
        .insert(fixtures::rollout("prod", "web", "web:2", 2));
    s.run(Action::RolloutAbort {
        rollout: oref(ObjectKind::Rollout, "prod", "web"),
    })
    .await
    .unwrap();
    let w: Vec<(String, u16)> = s.writes().into_iter().map(|r| (r.path, r.status)).collect();
    assert_eq!(
        w,
        [
            (
                "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/web/status".to_owned(),
                404
            ),
            (
                "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/web".to_owned(),
                200
            ),
        ]
    );
    assert_eq!(
        s.double.get("rollouts", "prod", "web").unwrap()["status"]["abort"],
        true
    );
}

#[tokio::test]
async fn argo_undo_puts_back_the_previous_replicaset_template() {
    let s = setup().await;
    let ro = s
        .double
        .insert(fixtures::rollout("prod", "web", "web:2", 2));
    s.double.insert(fixtures::replicaset(&ro, 1, "web:1", "h1"));
    s.double.insert(fixtures::replicaset(&ro, 2, "web:2", "h2"));
    // A ReplicaSet with matching labels but another controller: ignored.
    let mut stranger = fixtures::replicaset(&ro, 9, "evil:9", "h9");
    stranger["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
    s.double.insert(stranger);
    let o = oref(ObjectKind::Rollout, "prod", "web");
    let e = s
        .run(Action::RolloutUndo {
            rollout: o.clone(),
            revision: None,
        })
        .await
        .unwrap();
    let reqs = s.double.requests();
    s.double.clear_requests();
    let list = reqs.iter().find(|r| r.verb == "list").unwrap();
    assert_eq!(list.path, "/apis/apps/v1/namespaces/prod/replicasets");
    assert!(
        list.query.contains("labelSelector=app%3Dweb"),
        "{}",
        list.query
    );
    let patch = reqs.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        patch.path,
        "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/web"
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(patch.body[0]["op"], "replace");
    assert_eq!(patch.body[0]["path"], "/spec/template");
    assert_eq!(patch.body.as_array().unwrap().len(), 1);
    let stored = s.double.get("rollouts", "prod", "web").unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    assert_eq!(
        stored["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(e.details["revision"], 1);
    assert_eq!(
        e.undo,
        Some(Action::RolloutUndo {
            rollout: o.clone(),
            revision: Some(2)
        })
    );
    // To a revision that is not there.
    let missing = s
        .run(Action::RolloutUndo {
            rollout: o,
            revision: Some(7),
        })
        .await;
    assert!(matches!(missing, Err(ActError::NotFound(_))), "{missing:?}");
}

#[tokio::test]
async fn deployment_rollback_matches_kubectl_rollout_undo() {
    let s = setup().await;
    let mut d = fixtures::deployment("prod", "web", 3, "web:2", 2);
    d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!("{}");
    let d = s.double.insert(d);
    s.double.insert(fixtures::replicaset(&d, 1, "web:1", "h1"));
    s.double.insert(fixtures::replicaset(&d, 2, "web:2", "h2"));
    let o = oref(ObjectKind::Deployment, "prod", "web");
    let e = s
        .run(Action::DeploymentRollback {
            deployment: o.clone(),
            revision: None,
        })
        .await
        .unwrap();
    let w = s.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].path, "/apis/apps/v1/namespaces/prod/deployments/web");
    assert_eq!(
        w[0].content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(w[0].body[0]["path"], "/spec/template");
    assert_eq!(w[0].body[1]["path"], "/metadata/annotations");
    // kubectl keeps the Deployment's bookkeeping annotations, takes the rest from
    // the ReplicaSet.
    assert_eq!(
        w[0].body[1]["value"],
        json!({
            "deployment.kubernetes.io/revision": "2",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "team": "rev1",
        })
    );
    let stored = s.double.get("deployments", "prod", "web").unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    assert!(stored["spec"]["template"]["metadata"]["labels"]
        .get("pod-template-hash")
        .is_none());
    assert_eq!(
        e.undo,
        Some(Action::DeploymentRollback {
            deployment: o.clone(),
            revision: Some(2)
        })
    );
    // Rolling back to revision 1 again: the template already matches, nothing sent.
    let e = s
        .run(Action::DeploymentRollback {
            deployment: o.clone(),
            revision: Some(1),
        })
        .await
        .unwrap();
    assert_eq!(e.details["skipped"], true);
    assert!(s.writes().is_empty());
    // A paused Deployment is refused, as kubectl refuses it.
    let mut paused = s.double.get("deployments", "prod", "web").unwrap();
    paused["spec"]["paused"] = json!(true);
    s.double.insert(paused);
    let r = s
        .run(Action::DeploymentRollback {
            deployment: o,
            revision: Some(2),
        })
        .await;
    assert!(matches!(r, Err(ActError::Refused(_))), "{r:?}");
}

#[tokio::test]
async fn observe_reads_without_writing() {
    let s = setup().await;
    s.double.insert(fixtures::pod("prod", "web-1", "uid-1"));
    s.double
        .insert(fixtures::deployment("prod", "web", 3, "web:2", 2));
    let pod = s
        .kube
        .observe(&Action::RestartPod {
            pod: oref(ObjectKind::Pod, "prod", "web-1"),
            uid: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (
            pod["uid"].clone(),
            pod["phase"].clone(),
            pod["restarts"].clone()
        ),
        (json!("uid-1"), json!("Running"), json!(2))
    );
    let gone = s
        .kube
        .observe(&Action::RestartPod {
            pod: oref(ObjectKind::Pod, "prod", "web-2"),
            uid: None,
        })
        .await
        .unwrap();
    assert_eq!(gone, json!({"exists": false}));
    let scale = s
        .kube
        .observe(&Action::Scale {
            workload: oref(ObjectKind::Deployment, "prod", "web"),
            change: ReplicaChange::By(1),
            bounds: ReplicaBounds { min: 1, max: 5 },
        })
        .await
        .unwrap();
    assert_eq!(
        (scale["scale"].clone(), scale["revision"].clone()),
        (json!(3), json!("2"))
    );
    assert!(s.double.requests().iter().all(|r| r.method == "GET"));
}

/// Every action kind and every observation once: together they must use every
/// permission in the table (none is granted for nothing), and nothing outside it
/// (the double would have answered 403).
#[tokio::test]
async fn the_actuators_use_exactly_the_permission_table() {
    let s = setup().await;
    s.double.insert(fixtures::pod("prod", "web-1", "uid-1"));
    let d = s
        .double
        .insert(fixtures::deployment("prod", "web", 3, "web:2", 2));
    s.double.insert(fixtures::replicaset(&d, 1, "web:1", "h1"));
    s.double.insert(fixtures::replicaset(&d, 2, "web:2", "h2"));
    s.double.insert(fixtures::statefulset("prod", "db", 3));
    s.double.insert(fixtures::daemonset("prod", "agent"));
    s.double
        .insert(fixtures::configmap("prod", "flags", &[("a", "1")]));
    s.double.insert(fixtures::node("node-1"));
    let ro = s
        .double
        .insert(fixtures::rollout("prod", "canary", "c:2", 2));
    s.double.insert(fixtures::replicaset(&ro, 1, "c:1", "r1"));
    s.double.insert(fixtures::replicaset(&ro, 2, "c:2", "r2"));
    let bounds = ReplicaBounds { min: 1, max: 9 };
    let actions = vec![
        Action::RestartPod {
            pod: oref(ObjectKind::Pod, "prod", "web-1"),
            uid: Some("uid-1".into()),
        },
        Action::RolloutRestart {
            workload: oref(ObjectKind::Deployment, "prod", "web"),
        },
        Action::RolloutRestart {
            workload: oref(ObjectKind::StatefulSet, "prod", "db"),
        },
        Action::RolloutRestart {
            workload: oref(ObjectKind::DaemonSet, "prod", "agent"),
        },
        Action::Scale {
            workload: oref(ObjectKind::Deployment, "prod", "web"),
            change: ReplicaChange::By(1),
            bounds,
        },
        Action::Scale {
            workload: oref(ObjectKind::StatefulSet, "prod", "db"),
            change: ReplicaChange::By(1),
            bounds,
        },
        Action::PatchConfigMap {
            configmap: oref(ObjectKind::ConfigMap, "prod", "flags"),
            data: [("a".to_string(), Some("2".to_string()))].into(),
        },
        Action::CordonNode {
            node: "node-1".into(),
            cordon: true,
        },
        Action::RolloutAbort {
            rollout: oref(ObjectKind::Rollout, "prod", "canary"),
        },
        Action::RolloutUndo {
            rollout: oref(ObjectKind::Rollout, "prod", "canary"),
            revision: None,
        },
        Action::DeploymentRollback {
            deployment: oref(ObjectKind::Deployment, "prod", "web"),
            revision: None,
        },
    ];
    for a in &actions {
        let observer: &dyn Actuator = if s.kube.handles(a) {
            &s.kube
        } else {
            &s.rollouts
        };
        observer.observe(a).await.unwrap();
        s.run(a.clone())
            .await
            .unwrap_or_else(|e| panic!("{a:?}: {e}"));
    }
    assert!(
        s.double.requests().iter().all(|r| r.status != 403),
        "a request outside the table"
    );
    let table: BTreeSet<(String, String, String)> = PERMISSIONS
        .iter()
        .map(|p| (p.group.to_owned(), p.resource.to_owned(), p.verb.to_owned()))
        .collect();
    assert_eq!(s.double.used_rules(), table);
}

/// `deploy/kubernetes/rbac.yaml` grants exactly the permission table: nothing
/// more (no wildcards, no other verbs or resources), nothing less.
#[test]
fn the_rbac_manifest_grants_exactly_the_permission_table() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding};
    use serde::Deserialize;

    let text = include_str!("../../../deploy/kubernetes/rbac.yaml");
    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut cluster_wide: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut roles: BTreeMap<String, Vec<PolicyRule>> = BTreeMap::new();
    let mut bound: Vec<(String, bool)> = Vec::new();
    let mut accounts = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_json::to_value(Value::deserialize(doc).unwrap()).unwrap();
        match v["kind"].as_str().unwrap() {
            "ClusterRole" => {
                let r: ClusterRole = serde_json::from_value(v).unwrap();
                assert!(r.aggregation_rule.is_none());
                roles.insert(r.metadata.name.unwrap(), r.rules.unwrap_or_default());
            }
            "ClusterRoleBinding" => {
                let b: ClusterRoleBinding = serde_json::from_value(v).unwrap();
                assert_eq!(b.role_ref.kind, "ClusterRole");
                for s in b.subjects.unwrap() {
                    accounts.push((s.kind, s.namespace.unwrap_or_default(), s.name));
                }
                bound.push((b.role_ref.name, true));
            }
            "RoleBinding" => {
                let b: RoleBinding = serde_json::from_value(v).unwrap();
                assert_eq!(b.role_ref.kind, "ClusterRole");
                for s in b.subjects.unwrap() {
                    accounts.push((s.kind, s.namespace.unwrap_or_default(), s.name));
                }
                bound.push((b.role_ref.name, false));
            }
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_json::from_value(v).unwrap();
                assert_eq!(sa.metadata.name.as_deref(), Some("closedloop"));
            }
            other => panic!("unexpected kind {other} in rbac.yaml"),
        }
    }
    assert!(
        accounts.iter().all(|a| *a
            == (
                "ServiceAccount".into(),
                "monitoring".into(),
                "closedloop".into()
            )),
        "{accounts:?}"
    );
    for (role, cluster) in &bound {
        let rules = roles
            .get(role)
            .unwrap_or_else(|| panic!("binding to unknown role {role}"));
        for r in rules {
            assert!(r.non_resource_urls.is_none() && r.resource_names.is_none());
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for verb in &r.verbs {
                        assert!(g != "*" && res != "*" && verb != "*", "wildcard in {role}");
                        let p = (g.clone(), res.clone(), verb.clone());
                        if *cluster {
                            cluster_wide.insert(p.clone());
                        }
                        granted.insert(p);
                    }
                }
            }
        }
    }
    let table: BTreeSet<(String, String, String)> = PERMISSIONS
        .iter()
        .map(|p| (p.group.to_owned(), p.resource.to_owned(), p.verb.to_owned()))
        .collect();
    assert_eq!(
        granted, table,
        "rbac.yaml must grant exactly the actuators' table"
    );
    for p in PERMISSIONS.iter().filter(|p| p.cluster_scoped) {
        assert!(
            cluster_wide.contains(&(p.group.into(), p.resource.into(), p.verb.into())),
            "{p} is cluster-scoped and needs a ClusterRoleBinding"
        );
    }
}
