//! The Kubernetes API double (`closedloop::act::testing`, through the `testing`
//! feature) from outside the crate: it answers as the API server does, so the
//! decide stage's integration tests can point the service's kubeconfig at it.

use closedloop::act::testing::{fixtures, KubeDouble};

use crate::common::http;

fn token(double: &KubeDouble) -> String {
    let kubeconfig = std::fs::read_to_string(double.kubeconfig()).unwrap();
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_owned()
}

#[test]
fn the_double_speaks_the_api_servers_rest_and_status_json() {
    let double = KubeDouble::start();
    double.insert(fixtures::deployment("prod", "web", 3, "web:1", 1));
    let auth = format!("Bearer {}", token(&double));
    let url = |p: &str| format!("{}{p}", double.url());

    let r = http()
        .get(url("/apis/apps/v1/namespaces/prod/deployments/web"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "no token");

    let d: serde_json::Value = http()
        .get(url("/apis/apps/v1/namespaces/prod/deployments/web"))
        .header("Authorization", &auth)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(d["metadata"]["uid"].is_string() && d["metadata"]["resourceVersion"].is_string());

    let scale: serde_json::Value = http()
        .get(url("/apis/apps/v1/namespaces/prod/deployments/web/scale"))
        .header("Authorization", &auth)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(3))
    );

    let r = http()
        .patch(url("/apis/apps/v1/namespaces/prod/deployments/web"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415, "a PATCH needs a patch content type");

    // Not in the actuators' RBAC table: forbidden, as a cluster would answer.
    let r = http()
        .delete(url("/apis/apps/v1/namespaces/prod/deployments/web"))
        .header("Authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let status: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Forbidden"))
    );
    assert!(double.get("deployments", "prod", "web").is_some());

    let r = http()
        .get(url("/api/v1/namespaces/prod/pods/missing"))
        .header("Authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["reason"], "NotFound");
    assert_eq!(
        double.requests().len(),
        5,
        "authenticated requests are recorded"
    );
}
