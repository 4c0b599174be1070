//! A rule group's remote `datasource:`: each expression is sent whole to
//! `<datasource>/api/v1/query` at the evaluation time and its result used as is —
//! the remote engine sees its full history, which is the point. Consequence: in
//! such a group a recording rule's output (written to the local store) is not
//! visible to later rules of the same group.

use std::time::Duration;

use promql_parser::parser::Expr;

use super::group::Source;
use crate::promql::{QueryError, Sample};
use crate::storage::LabelSet;

/// Evaluates against a remote Prometheus-compatible query API.
pub(crate) struct RemoteSource {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) timeout: Duration,
}

impl Source for RemoteSource {
    fn query(&self, _expr: &Expr, text: &str, t_ms: i64) -> Result<Vec<Sample>, QueryError> {
        let url = format!("{}/api/v1/query", self.base.trim_end_matches('/'));
        let time = format!("{:.3}", t_ms as f64 / 1000.0);
        let fut = self
            .client
            .post(&url)
            .timeout(self.timeout)
            .form(&[("query", text), ("time", time.as_str())])
            .send();
        let body: serde_json::Value = self
            .runtime
            .block_on(async {
                let r = fut.await?;
                r.json::<serde_json::Value>().await
            })
            .map_err(|e| QueryError::Storage(format!("datasource {}: {e}", self.base)))?;
        parse_query_response(&body, t_ms)
            .map_err(|e| QueryError::Storage(format!("datasource {}: {e}", self.base)))
    }
}

/// Turns a Prometheus `/api/v1/query` response into samples.
pub(crate) fn parse_query_response(
    body: &serde_json::Value,
    t_ms: i64,
) -> Result<Vec<Sample>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "{}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("query failed")
        ));
    }
    let val = |p: &serde_json::Value| -> Result<f64, String> {
        let s = p[1].as_str().ok_or("value is not a string")?;
        match s {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
        }
    };
    let data = &body["data"];
    match data["resultType"].as_str() {
        Some("vector") => {
            let mut out = Vec::new();
            for r in data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let labels: Vec<(String, String)> = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Sample {
                    labels: LabelSet::from_pairs(labels),
                    t: t_ms,
                    v: val(&r["value"])?,
                });
            }
            Ok(out)
        }
        Some("scalar") => Ok(vec![Sample {
            labels: LabelSet::default(),
            t: t_ms,
            v: val(&data["result"])?,
        }]),
        other => Err(format!(
            "result type {} is not a vector or scalar",
            other.unwrap_or("missing")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_remote_query_results() {
        let body = json!({"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"a"},"value":[10,"1"]},
            {"metric":{"job":"b"},"value":[10,"+Inf"]}]}});
        let s = parse_query_response(&body, 10_000).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels.get("job"), Some("a"));
        assert!(s[1].v.is_infinite());
        let scalar = json!({"status":"success","data":{"resultType":"scalar","result":[10,"2.5"]}});
        assert_eq!(parse_query_response(&scalar, 0).unwrap()[0].v, 2.5);
        let err = json!({"status":"error","errorType":"bad_data","error":"parse error"});
        assert!(parse_query_response(&err, 0)
            .unwrap_err()
            .contains("parse error"));
    }
}
