//! scorer-cloud's tests against local stand-ins of Google's APIs: one test
//! binary, a module per API.

mod bigquery;
