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

mod request;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub use request::{Field, Parsed, Row, parse_request};

use super::AppState;
use crate::model::{Contribution, Model};
use crate::registry::{ModelRef, RegistryError};

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
    /// The model's name and the exact version that answered.
    pub model: String,
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

/// `?model=name@alias`.
#[derive(Debug, serde::Deserialize)]
pub struct PredictQuery {
    model: Option<String>,
}

#[utoipa::path(
    post,
    operation_id = "predict",
    path = "/predict",
    tag = "predict",
    request_body = PredictRequest,
    params(
        ("X-API-Key" = Option<String>, Header, description = "Required when PREDICT_API_KEYS is set"),
        ("model" = Option<String>, Query, description = "The model: `name` (its @production), `name@alias` or `name:version`; default: the service's MODEL"),
    ),
    responses(
        (status = 200, description = "One prediction per row", body = PredictResponse),
        (status = 400, description = "Not JSON, empty, or a value the model cannot take", body = ErrorResponse),
        (status = 401, description = "API key missing or wrong", body = ErrorResponse),
        (status = 404, description = "No such model, alias or version (the answer names what there is)", body = ErrorResponse),
        (status = 413, description = "Body or row count over the limit", body = ErrorResponse),
        (status = 503, description = "Model not loaded yet", body = ErrorResponse),
    )
)]
pub async fn handle(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<PredictQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
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
    let Some(start_up) = state.model() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the model is still loading", vec![]);
    };
    let model = match state.models.get() {
        Some(models) => {
            let asked = match query.model.as_deref().map(str::parse::<ModelRef>).transpose() {
                Ok(asked) => asked,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("?model=: {e}"), vec![]),
            };
            let reference = asked.as_ref().unwrap_or(&models.routes.default);
            match models.get(reference).await {
                Ok(model) => model,
                Err(e @ (RegistryError::Unknown(_) | RegistryError::Invalid(_))) => {
                    return error(StatusCode::NOT_FOUND, e.to_string(), vec![]);
                }
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the model {reference} cannot be read now: {e}"),
                        vec![],
                    );
                }
            }
        }
        None => start_up.clone(),
    };
    let model = model.as_ref();
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
        model: model.name().to_owned(),
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
