//! `POST /predict`: online predictions, validated against the model's
//! feature spec.
//!
//! The challenge's contract: `{"flights": [{"OPERA": .., "TIPOVUELO": ..,
//! "MES": ..}]}` answers `{"predict": [0|1, ...]}`; any model also takes the
//! generic `{"instances": [{feature: value, ...}]}`. Extra fields are
//! ignored; every unusable value is a 400 naming the row, field and value.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AppState;
use crate::model::{Contribution, Model};

/// Rows to score. Give either `flights` or `instances`.
#[derive(Debug, utoipa::ToSchema)]
pub struct PredictRequest {
    /// Rows, each an object of feature name to value (string or number),
    /// e.g. `{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub flights: Option<Vec<Map<String, Value>>>,
    /// The same, under the generic name.
    #[schema(value_type = Option<Vec<Object>>)]
    pub instances: Option<Vec<Map<String, Value>>>,
    /// When above 0, return that many top contributions per row.
    pub explain: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PredictResponse {
    /// 0/1 per row, in request order.
    pub predict: Vec<u8>,
    /// Probability of class 1 per row.
    pub probability: Vec<f64>,
    pub model_version: String,
    /// Per row, the features that moved the logit most (when asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanations: Option<Vec<Vec<Contribution>>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    /// The first problem, in words.
    pub detail: String,
    /// Every problem found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

fn error(status: StatusCode, detail: impl Into<String>, errors: Vec<String>) -> Response {
    (
        status,
        Json(ErrorResponse {
            detail: detail.into(),
            errors,
        }),
    )
        .into_response()
}

#[utoipa::path(
    post,
    operation_id = "predict",
    path = "/predict",
    tag = "predict",
    request_body = PredictRequest,
    params(("X-API-Key" = Option<String>, Header, description = "Required when PREDICT_API_KEYS is set")),
    responses(
        (status = 200, description = "One prediction per row", body = PredictResponse),
        (status = 400, description = "Not JSON, empty, or a value the model cannot take", body = ErrorResponse),
        (status = 401, description = "API key missing or wrong", body = ErrorResponse),
        (status = 413, description = "Body or row count over the limit", body = ErrorResponse),
        (status = 503, description = "Model not loaded yet", body = ErrorResponse),
    )
)]
pub async fn handle(State(state): State<Arc<AppState>>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let body = match super::read_body(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    if let Some(keys) = &state.api_keys {
        let presented = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !keys.accepts(presented) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API key (header X-API-Key)",
                vec![],
            );
        }
    }
    let Some(model) = state.model() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the model is still loading", vec![]);
    };
    let names: Vec<&str> = model.required_columns().collect();
    let request = match parse_request(&body, &names) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a valid request: {e}"),
                vec![],
            );
        }
    };
    let key = request.key;
    if request.rows.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{key} is empty: send at least one row"),
            vec![],
        );
    }
    if request.rows.len() > state.predict_max_rows {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} rows in {key}; at most {} per request",
                request.rows.len(),
                state.predict_max_rows
            ),
            vec![],
        );
    }
    match predict(model, key, &request.rows, request.explain) {
        Ok(response) => Json(response).into_response(),
        Err(errors) => error(StatusCode::BAD_REQUEST, errors[0].clone(), errors),
    }
}

/// Scores parsed rows; on failure, every problem as `key[i].FIELD: ...`.
pub fn predict(model: &Model, key: &str, rows: &[Row<'_>], explain: usize) -> Result<PredictResponse, Vec<String>> {
    let names: Vec<&str> = model.required_columns().collect();
    let mut errors = Vec::new();
    let mut predict = Vec::with_capacity(rows.len());
    let mut probability = Vec::with_capacity(rows.len());
    let mut explanations = (explain > 0).then(|| Vec::with_capacity(rows.len()));
    for (i, row) in rows.iter().enumerate() {
        for (name, field) in names.iter().zip(&row.0) {
            if let Field::Unusable(kind) = field {
                errors.push(format!("{key}[{i}].{name}: expected a string or number, got {kind}"));
            }
        }
        let get = |name: &str| {
            names.iter().position(|n| *n == name).and_then(|j| match &row.0[j] {
                Field::Text(t) => Some(t.as_ref()),
                _ => None,
            })
        };
        let problems = model.rejections(get);
        if !problems.is_empty() {
            // An unusable field was reported above; its "missing" is noise.
            let unusable = |column: &str| {
                names
                    .iter()
                    .position(|n| *n == column)
                    .is_some_and(|j| matches!(row.0[j], Field::Unusable(_)))
            };
            errors.extend(
                problems
                    .iter()
                    .filter(|p| !unusable(&p.column))
                    .map(|p| format!("{key}[{i}].{p}")),
            );
            continue;
        }
        if let Ok(logit) = model.logit(get) {
            let p = Model::probability(logit);
            probability.push(p);
            predict.push(u8::from(model.predict(p)));
            if let Some(out) = explanations.as_mut()
                && let Ok(mut parts) = model.explain(get)
            {
                parts.truncate(explain);
                out.push(parts);
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PredictResponse {
        predict,
        probability,
        model_version: model.version().to_owned(),
        explanations,
    })
}

/// One feature value of a row, as the CSV engine would see the field.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Absent,
    Text(Cow<'a, str>),
    /// A list or an object: no field value.
    Unusable(&'static str),
}

/// A row's model features, in the model's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a>(pub Vec<Field<'a>>);

/// A parsed request.
pub struct Parsed<'a> {
    pub key: &'static str,
    pub rows: Vec<Row<'a>>,
    pub explain: usize,
}

/// Parses a request body keeping only the model's features, borrowing
/// strings from the body: no map per row, and other fields are skipped.
pub fn parse_request<'a>(body: &'a [u8], names: &[&str]) -> Result<Parsed<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = RequestSeed { names }.deserialize(&mut de)?;
    de.end()?;
    Ok(parsed)
}

struct RequestSeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = Parsed<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Parsed<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object like {"flights": [{"OPERA": ..., "TIPOVUELO": ..., "MES": ...}]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut rows: Option<(&'static str, Vec<Row<'de>>)> = None;
        let mut explain = 0usize;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "flights" | "instances" => {
                    let which = if key == "flights" { "flights" } else { "instances" };
                    if rows.is_some() {
                        return Err(de::Error::custom("give flights or instances, not both"));
                    }
                    rows = Some((which, map.next_value_seed(RowsSeed { names: self.names })?));
                }
                "explain" => explain = map.next_value()?,
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown field `{other}`, expected `flights`, `instances` or `explain`"
                    )));
                }
            }
        }
        let (key, rows) = rows.ok_or_else(|| de::Error::custom("the body needs a \"flights\" list"))?;
        Ok(Parsed { key, rows, explain })
    }
}

struct RowsSeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = Vec<Row<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = Vec<Row<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(4096));
        while let Some(row) = seq.next_element_seed(RowSeed { names: self.names })? {
            rows.push(row);
        }
        Ok(rows)
    }
}

struct RowSeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of feature names to values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = vec![Field::Absent; self.names.len()];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.names.iter().position(|n| *n == key.as_ref()) {
                Some(j) => fields[j] = map.next_value::<FieldValue<'de>>()?.0,
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Row(fields))
    }
}

/// A JSON value as the text a CSV field would hold. Integral floats lose
/// their `.0` so `3.0` reads as month `3`; null is absent.
struct FieldValue<'a>(Field<'a>);

impl<'de> Deserialize<'de> for FieldValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Text(Cow::Owned(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Text(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Text(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                let text = if v.fract() == 0.0 && v.abs() < 1e15 {
                    format!("{}", v as i64)
                } else {
                    v.to_string()
                };
                Ok(FieldValue(Field::Text(Cow::Owned(text))))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Text(Cow::Borrowed(if v { "true" } else { "false" }))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Absent))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(FieldValue(Field::Absent))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(FieldValue(Field::Unusable("a list")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(FieldValue(Field::Unusable("an object")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(model: &Model, v: Value, explain: usize) -> Result<PredictResponse, Vec<String>> {
        let body = serde_json::to_vec(&json!({ "flights": v })).unwrap();
        let names: Vec<&str> = model.required_columns().collect();
        let parsed = parse_request(&body, &names).unwrap();
        predict(model, parsed.key, &parsed.rows, explain)
    }

    #[test]
    fn the_challenge_example_predicts_one_zero_or_one() {
        let model = Model::default_model().unwrap();
        let r = run(
            &model,
            json!([{"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}]),
            0,
        )
        .unwrap();
        assert_eq!(r.predict.len(), 1);
        assert!(r.predict[0] <= 1);
        assert!((0.0..=1.0).contains(&r.probability[0]));
    }

    #[test]
    fn every_bad_value_is_named() {
        let model = Model::default_model().unwrap();
        let errors = run(
            &model,
            json!([
                {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3},
                {"OPERA": "Nowhere Air", "TIPOVUELO": "O", "MES": 13},
                {"TIPOVUELO": "I", "MES": [1]}
            ]),
            0,
        )
        .unwrap_err();
        let text = errors.join("\n");
        assert!(
            text.contains("flights[1].OPERA: unknown value \"Nowhere Air\""),
            "{text}"
        );
        assert!(
            text.contains("flights[1].TIPOVUELO: unknown value \"O\" (expected one of I, N)"),
            "{text}"
        );
        assert!(text.contains("flights[1].MES: unknown value \"13\""), "{text}");
        assert!(
            text.contains("flights[2].MES: expected a string or number, got a list"),
            "{text}"
        );
        assert!(text.contains("flights[2].OPERA: missing value"), "{text}");
    }

    #[test]
    fn numbers_and_strings_mean_the_same() {
        let model = Model::default_model().unwrap();
        let a = run(&model, json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}]), 2).unwrap();
        let b = run(
            &model,
            json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": "7", "extra": {"a": [1]}}]),
            2,
        )
        .unwrap();
        let c = run(
            &model,
            json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7.0}]),
            0,
        )
        .unwrap();
        assert_eq!(a.probability, b.probability);
        assert_eq!(a.probability, c.probability);
        assert_eq!(a.explanations.as_ref().unwrap()[0].len(), 2);
    }
}
