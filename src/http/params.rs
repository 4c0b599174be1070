//! Request parameters as Prometheus's API reads them: from the query string and, for
//! POST, from a form-encoded body; repeated keys (`match[]`) kept in order; times as
//! RFC 3339 or Unix seconds with a fraction.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Uri};

use super::error::ApiError;

/// All parameters of a request.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Query-string parameters plus, for a form body, the body's parameters.
    pub(crate) fn from_request(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Self {
        let mut pairs: Vec<(String, String)> = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(pairs)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter in milliseconds, or `default` when absent (Prometheus's
    /// `parseTimeParam`, and its error text).
    pub(crate) fn time_ms(&self, key: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => parse_time_ms(v).map_err(|e| {
                ApiError::bad_data(format!(
                    "invalid parameter \"{key}\": Invalid time value for '{key}': {e}"
                ))
            }),
        }
    }

    /// A time parameter that must be given (`query_range`'s `start` and `end`).
    pub(crate) fn required_time_ms(&self, key: &str) -> Result<i64, ApiError> {
        parse_time_ms(self.get(key).unwrap_or_default())
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}")))
    }
}

/// Parses Unix seconds (`1435781451.781`) or RFC 3339 into milliseconds.
pub(crate) fn parse_time_ms(v: &str) -> Result<i64, String> {
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() {
            return Err(format!("cannot parse {v:?} to a valid timestamp"));
        }
        let ms = (secs * 1000.0).round();
        return Ok(ms.clamp(i64::MIN as f64, i64::MAX as f64) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {v:?} to a valid timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_prometheus() {
        assert_eq!(parse_time_ms("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(
            parse_time_ms("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("NaN").is_err());
    }

    #[test]
    fn repeated_keys_and_form_bodies() {
        let uri: Uri = "/api/v1/series?match[]=up&match[]=down".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Params::from_request(
            &uri,
            &headers,
            &Bytes::from_static(b"match%5B%5D=x%7Ba%3D%22b%22%7D&start=1"),
        );
        assert_eq!(p.all("match[]"), vec!["up", "down", "x{a=\"b\"}"]);
        assert_eq!(p.time_ms("start", 0).unwrap(), 1000);
        assert_eq!(p.time_ms("end", 7).unwrap(), 7);
    }
}
