//! `/api/v1/query_exemplars` (GET and form POST), as Prometheus answers it: the
//! exemplars in `[start, end]` of every series a selector of `query` matches,
//! `[{"seriesLabels": {..}, "exemplars": [{"labels": {..}, "value": "v",
//! "timestamp": t}]}]`. Grafana's exemplar toggle calls it with the panel's query.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::api::{encode_success, json_body};
use super::error::ApiError;
use super::params::Params;
use super::App;
use crate::promql::value::{Ts, ValueStr};
use crate::storage::exemplars::Exemplar;
use crate::storage::LabelSet;

struct Labels<'a>(&'a LabelSet);

impl Serialize for Labels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for l in self.0.iter() {
            m.serialize_entry(&*l.name, &*l.value)?;
        }
        m.end()
    }
}

struct ExemplarJson<'a>(&'a Exemplar);

impl Serialize for ExemplarJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("labels", &Labels(&self.0.labels))?;
        m.serialize_entry("value", &ValueStr(self.0.value))?;
        m.serialize_entry("timestamp", &Ts(self.0.t))?;
        m.end()
    }
}

struct SeriesJson<'a>(&'a (LabelSet, Vec<Exemplar>));

impl Serialize for SeriesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("seriesLabels", &Labels(&self.0 .0))?;
        let list: Vec<ExemplarJson<'_>> = self.0 .1.iter().map(ExemplarJson).collect();
        m.serialize_entry("exemplars", &list)?;
        m.end()
    }
}

pub(crate) async fn query_exemplars(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_request(&uri, &headers, &body);
    let parsed = (|| {
        let start = params.time_ms("start", i64::MIN)?;
        let end = params.time_ms("end", i64::MAX)?;
        if end < start {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start timestamp",
            ));
        }
        let query = params.get("query").unwrap_or_default().to_owned();
        Ok((query, start, end))
    })();
    let (query, start, end) = match parsed {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = app
        .read(move |app, _| {
            let limits = &app.engine.options().limits;
            let sets = crate::promql::query_selectors(&query, limits)
                .map_err(|e| ApiError::bad_data(e.to_string()))?;
            let series = app.exemplars.select(&sets, start, end);
            let data: Vec<SeriesJson<'_>> = series.iter().map(SeriesJson).collect();
            encode_success(&data)
        })
        .await;
    json_body(result)
}
