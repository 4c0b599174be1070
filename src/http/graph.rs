//! `/graph`: the page an alert's default `generatorURL` points at
//! (`/graph?g0.expr=<expr>&g0.tab=1`, Prometheus's link shape). A plain HTML page,
//! rendered on the server without scripts: the expression in a form and its
//! current value as a table (at most [`MAX_ROWS`] rows). For charts, point
//! `alerting.generator_url` at Grafana Explore instead.
//!
//! Invariants: every piece of text from the request or the data is HTML-escaped;
//! the query runs off the async workers with the engine's own limits.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::params::Params;
use super::App;
use crate::promql::{format_value, Value};

/// Rows shown at most; the rest are counted.
const MAX_ROWS: usize = 1000;

pub(crate) async fn graph(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    let params = Params::from_request(&uri, &headers, &Bytes::new());
    let expr = params.get("g0.expr").unwrap_or_default().to_owned();
    let now = chrono::Utc::now().timestamp_millis();
    let result = if expr.trim().is_empty() {
        None
    } else {
        let (app, q) = (app.clone(), expr.clone());
        Some(
            app.read(move |app, ctx| {
                app.engine
                    .instant_query_with(app.store.as_ref(), &q, now, ctx)
                    .map_err(|e| ApiError::bad_data(e.to_string()))
            })
            .await
            .map_err(|e| e.message),
        )
    };
    let body = render(
        &expr,
        now,
        result.as_ref().map(|r| r.as_ref().map(|q| &q.value)),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render(expr: &str, now_ms: i64, result: Option<Result<&Value, &String>>) -> String {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>closedloop query</title>\
         <style>body{font-family:sans-serif;margin:2em}textarea{width:100%;font-family:monospace}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;\
         font-family:monospace}.err{color:#b00}</style></head><body>\n<h1>closedloop query</h1>\n\
         <form method=\"get\" action=\"graph\"><textarea name=\"g0.expr\" rows=\"4\">",
    );
    h.push_str(&escape(expr));
    h.push_str("</textarea><input type=\"hidden\" name=\"g0.tab\" value=\"1\"><p><button type=\"submit\">Execute</button></p></form>\n");
    let when = crate::rules::notifier::rfc3339(now_ms);
    match result {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(h, "<p class=\"err\">Error: {}</p>", escape(e));
        }
        Some(Ok(v)) => {
            let _ = writeln!(h, "<p>Evaluated at {when}.</p>");
            let rows: Vec<(String, String)> = match v {
                Value::Vector(samples) => samples
                    .iter()
                    .map(|s| (s.labels.to_string(), format_value(s.v)))
                    .collect(),
                Value::Scalar(_, x) => vec![("scalar".into(), format_value(*x))],
                Value::String(_, s) => vec![("string".into(), s.clone())],
                Value::Matrix(series) => series
                    .iter()
                    .map(|s| {
                        let points: Vec<String> = s
                            .points
                            .iter()
                            .map(|(t, x)| format!("{} @{}", format_value(*x), *t as f64 / 1000.0))
                            .collect();
                        (s.labels.to_string(), points.join("\n"))
                    })
                    .collect(),
            };
            if rows.is_empty() {
                h.push_str("<p>Empty query result.</p>\n");
            } else {
                h.push_str("<table><tr><th>Series</th><th>Value</th></tr>\n");
                for (labels, value) in rows.iter().take(MAX_ROWS) {
                    let _ = writeln!(
                        h,
                        "<tr><td>{}</td><td>{}</td></tr>",
                        escape(labels),
                        escape(value).replace('\n', "<br>")
                    );
                }
                h.push_str("</table>\n");
                if rows.len() > MAX_ROWS {
                    let _ = writeln!(h, "<p>{} more rows not shown.</p>", rows.len() - MAX_ROWS);
                }
            }
        }
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::Sample;
    use crate::storage::LabelSet;

    #[test]
    fn text_from_the_request_and_the_data_is_escaped() {
        let v = Value::Vector(vec![Sample {
            labels: LabelSet::from_pairs([("__name__", "up"), ("job", "<script>")]),
            t: 0,
            v: 1.0,
        }]);
        let page = render("up{job=\"<script>\"}", 0, Some(Ok(&v)));
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("up{job=&quot;&lt;script&gt;&quot;}"),
            "{page}"
        );
        assert!(page.contains("<td>1</td>"), "{page}");
        let page = render("x +", 0, Some(Err(&"parse error <here>".to_string())));
        assert!(page.contains("Error: parse error &lt;here&gt;"), "{page}");
    }
}
