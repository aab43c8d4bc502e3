//! `POST /predict`: online predictions, validated against the model's
//! feature spec.
//!
//! The challenge's contract: `{"flights": [{"OPERA": .., "TIPOVUELO": ..,
//! "MES": ..}]}` answers `{"predict": [0|1, ...]}`; any model also takes the
//! generic `{"instances": [{feature: value, ...}]}`. Extra fields are
//! ignored; every unusable value is a 400 naming the row, field and value.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AppState;
use crate::model::{Contribution, Model};

/// Rows to score. Give either `flights` or `instances`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Rows, each an object of feature name to value (string or number),
    /// e.g. `{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub flights: Option<Vec<Map<String, Value>>>,
    /// The same, under the generic name.
    #[schema(value_type = Option<Vec<Object>>)]
    pub instances: Option<Vec<Map<String, Value>>>,
    /// When above 0, return that many top contributions per row.
    #[serde(default)]
    pub explain: usize,
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
pub async fn handle(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
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
    let request: PredictRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a valid request: {e}"),
                vec![],
            );
        }
    };
    let (key, rows) = match (request.flights, request.instances) {
        (Some(rows), None) => ("flights", rows),
        (None, Some(rows)) => ("instances", rows),
        (Some(_), Some(_)) => return error(StatusCode::BAD_REQUEST, "give flights or instances, not both", vec![]),
        (None, None) => return error(StatusCode::BAD_REQUEST, "the body needs a \"flights\" list", vec![]),
    };
    if rows.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{key} is empty: send at least one row"),
            vec![],
        );
    }
    if rows.len() > state.predict_max_rows {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} rows in {key}; at most {} per request",
                rows.len(),
                state.predict_max_rows
            ),
            vec![],
        );
    }
    match predict(model, key, &rows, request.explain) {
        Ok(response) => Json(response).into_response(),
        Err(errors) => error(StatusCode::BAD_REQUEST, errors[0].clone(), errors),
    }
}

/// Scores validated rows; on failure, every problem as `key[i].FIELD: ...`.
pub fn predict(
    model: &Model,
    key: &str,
    rows: &[Map<String, Value>],
    explain: usize,
) -> Result<PredictResponse, Vec<String>> {
    let mut errors = Vec::new();
    let mut predict = Vec::with_capacity(rows.len());
    let mut probability = Vec::with_capacity(rows.len());
    let mut explanations = (explain > 0).then(|| Vec::with_capacity(rows.len()));
    for (i, row) in rows.iter().enumerate() {
        // Values as the engine sees CSV fields: text.
        let mut texts: Vec<(&str, Option<String>)> = Vec::with_capacity(model.terms().len());
        for name in model.required_columns() {
            match row.get(name).map(as_text) {
                Some(Err(kind)) => errors.push(format!("{key}[{i}].{name}: expected a string or number, got {kind}")),
                Some(Ok(text)) => texts.push((name, text)),
                None => texts.push((name, None)),
            }
        }
        let get = |name: &str| texts.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_deref());
        let problems = model.rejections(get);
        if !problems.is_empty() {
            errors.extend(problems.iter().map(|p| format!("{key}[{i}].{p}")));
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

/// A JSON value as the text a CSV field would hold. Integral floats lose
/// their `.0` so `3.0` reads as month `3`.
fn as_text(value: &Value) -> Result<Option<String>, &'static str> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        })),
        Value::Array(_) => Err("a list"),
        Value::Object(_) => Err("an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Vec<Map<String, Value>> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_challenge_example_predicts_one_zero_or_one() {
        let model = Model::default_model().unwrap();
        let r = predict(
            &model,
            "flights",
            &rows(json!([{"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3}])),
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
        let errors = predict(
            &model,
            "flights",
            &rows(json!([
                {"OPERA": "Aerolineas Argentinas", "TIPOVUELO": "N", "MES": 3},
                {"OPERA": "Nowhere Air", "TIPOVUELO": "O", "MES": 13},
                {"TIPOVUELO": "I", "MES": [1]}
            ])),
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
        let a = predict(
            &model,
            "flights",
            &rows(json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7}])),
            2,
        )
        .unwrap();
        let b = predict(
            &model,
            "flights",
            &rows(json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": "7", "extra": 1}])),
            2,
        )
        .unwrap();
        let c = predict(
            &model,
            "flights",
            &rows(json!([{"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "MES": 7.0}])),
            0,
        )
        .unwrap();
        assert_eq!(a.probability, b.probability);
        assert_eq!(a.probability, c.probability);
        assert_eq!(a.explanations.as_ref().unwrap()[0].len(), 2);
    }
}
