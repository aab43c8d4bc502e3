//! `POST /predict`: online predictions, validated against the model's
//! feature spec.
//!
//! Any model takes `{"instances": [{feature: value, ...}]}` and answers
//! `{"predict": [0|1, ...], "probability": [...], "model_version": ...}`;
//! the shipped flight-delay model also takes the challenge's own form,
//! `{"flights": [{"OPERA": .., "TIPOVUELO": .., "MES": ..}]}`.
//!
//! One rule with the CSV path: a value means what the same text would mean
//! in a CSV field (`3.0` is not month `3`, `1e0` is not `1`), and `null` is
//! an empty field (imputed for a numeric feature, missing for a
//! categorical). Every feature must be present, and an unknown field is a
//! 400 naming the closest feature, so a misspelt key can never be silently
//! imputed. Every problem of every row is named in one 400.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::AppState;
use crate::model::{Contribution, Model};

/// Rows to score. Give either `instances` or `flights`.
#[derive(Debug, utoipa::ToSchema)]
pub struct PredictRequest {
    /// Rows, each an object with every feature of the model (string, number
    /// or null), e.g. `{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub instances: Option<Vec<Map<String, Value>>>,
    /// The same, under the flight-delay challenge's name.
    #[schema(value_type = Option<Vec<Object>>)]
    pub flights: Option<Vec<Map<String, Value>>>,
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
    #[schema(value_type = Option<Vec<Vec<ContributionSchema>>>)]
    pub explanations: Option<Vec<Vec<Contribution>>>,
}

/// One feature's share of a row's logit (the schema of
/// [`Contribution`], which the engine defines without OpenAPI).
#[derive(utoipa::ToSchema)]
#[schema(as = Contribution)]
#[allow(dead_code)]
pub struct ContributionSchema {
    pub feature: String,
    pub value: String,
    /// Added to the logit; positive pushes the probability up.
    pub contribution: f64,
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
        let before = errors.len();
        for field in &row.unknown {
            errors.push(format!(
                "{key}[{i}]: unknown field {field:?}{}",
                suggestion(field, &names)
            ));
        }
        for (name, field) in names.iter().zip(&row.fields) {
            match field {
                Field::Unusable(kind) => {
                    errors.push(format!("{key}[{i}].{name}: expected a string, a number or null, got {kind}"));
                }
                Field::Absent => errors.push(format!(
                    "{key}[{i}].{name}: missing (every feature is required; null asks for the training mean where the feature is numeric)"
                )),
                Field::Null | Field::Text(_) => {}
            }
        }
        let get = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|j| match &row.fields[j] {
                    Field::Text(t) => Some(t.as_ref()),
                    _ => None,
                })
        };
        // Values the model cannot take, among the fields that are there.
        let present = |column: &str| {
            names
                .iter()
                .position(|n| *n == column)
                .is_some_and(|j| matches!(row.fields[j], Field::Null | Field::Text(_)))
        };
        errors.extend(
            model
                .rejections(get)
                .iter()
                .filter(|p| present(&p.column))
                .map(|p| format!("{key}[{i}].{p}")),
        );
        if errors.len() > before {
            continue;
        }
        match model.logit(get) {
            Ok(logit) if logit.is_finite() => {}
            // As the batch engine: a row whose score is not a finite number
            // is refused, never answered 0 or 1.
            _ => {
                errors.push(format!(
                    "{key}[{i}]: the model could not compute a finite score for this row"
                ));
                continue;
            }
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

/// ` (did you mean HORA?)` when a feature name is close to `field`, else
/// the list of features.
fn suggestion(field: &str, names: &[&str]) -> String {
    let lower = field.to_lowercase();
    let closest = names
        .iter()
        .map(|n| (edit_distance(&lower, &n.to_lowercase()), *n))
        .min_by_key(|(d, _)| *d);
    match closest {
        Some((d, name)) if d <= 2.max(name.len() / 3) => format!(" (did you mean {name}?)"),
        _ => format!(" (the model's features are {})", names.join(", ")),
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// One feature value of a row, as the CSV engine would see the field.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// The key is not there: an error (every feature is required).
    Absent,
    /// `null`: an empty field.
    Null,
    /// The text a CSV field would hold: a string's content, a number as
    /// written.
    Text(Cow<'a, str>),
    /// A list or an object: no field value.
    Unusable(&'static str),
}

/// A row's model features in the model's order, and the keys that are no
/// feature of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub fields: Vec<Field<'a>>,
    pub unknown: Vec<String>,
}

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
        let mut unknown = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.names.iter().position(|n| *n == key.as_ref()) {
                Some(j) => fields[j] = map.next_value::<FieldValue<'de>>()?.0,
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                    unknown.push(key.into_owned());
                }
            }
        }
        Ok(Row { fields, unknown })
    }
}

/// A JSON value as the text a CSV field would hold: a string's content, a
/// number exactly as written (so `3.0` stays `3.0`, as it would in a CSV).
struct FieldValue<'a>(Field<'a>);

impl<'de> Deserialize<'de> for FieldValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        let field = match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => Field::Text(Cow::Borrowed(&text[1..text.len() - 1])),
            Some(b'"') => Field::Text(Cow::Owned(
                serde_json::from_str::<String>(text).map_err(de::Error::custom)?,
            )),
            Some(b'[') => Field::Unusable("a list"),
            Some(b'{') => Field::Unusable("an object"),
            _ if text == "null" => Field::Null,
            _ => Field::Text(Cow::Borrowed(text)),
        };
        Ok(FieldValue(field))
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
                {"TIPOVUELO": "I", "MES": [1]},
                {"OPERA": null, "TIPOVUELO": "I", "mes": 3}
            ]),
            0,
        )
        .unwrap_err();
        let text = errors.join("\n");
        for expected in [
            "flights[1].OPERA: unknown value \"Nowhere Air\"",
            "flights[1].TIPOVUELO: unknown value \"O\" (expected one of I, N)",
            "flights[1].MES: unknown value \"13\"",
            "flights[2].MES: expected a string, a number or null, got a list",
            "flights[2].OPERA: missing (every feature is required",
            "flights[3]: unknown field \"mes\" (did you mean MES?)",
            "flights[3].OPERA: missing value",
            "flights[3].MES: missing (every feature is required",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        assert_eq!(errors.len(), 8, "{text}");
    }

    #[test]
    fn a_value_means_what_the_same_text_means_in_a_csv() {
        let model = Model::default_model().unwrap();
        let a = run(&model, json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}]), 2).unwrap();
        let b = run(
            &model,
            json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": "7"}]),
            2,
        )
        .unwrap();
        assert_eq!(a.probability, b.probability);
        assert_eq!(a.explanations.as_ref().unwrap()[0].len(), 2);
        // Written as a CSV field, 7.0 and 7e0 are not month 7: nor here.
        for raw in [r#"7.0"#, r#"7e0"#] {
            let body = format!(r#"{{"flights": [{{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": {raw}}}]}}"#);
            let names: Vec<&str> = model.required_columns().collect();
            let parsed = parse_request(body.as_bytes(), &names).unwrap();
            let errors = predict(&model, parsed.key, &parsed.rows, 0).unwrap_err();
            assert_eq!(
                errors,
                [format!(
                    "flights[0].MES: unknown value \"{raw}\" (expected one of 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)"
                )]
            );
        }
        let extra = run(
            &model,
            json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7, "extra": {"a": [1]}}]),
            0,
        )
        .unwrap_err();
        assert!(extra[0].contains("unknown field \"extra\""), "{extra:?}");
    }
}
