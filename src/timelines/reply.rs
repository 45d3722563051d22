//! Request bodies going out and successful replies coming back, with the helpers that turn a
//! reply's `data` into typed values.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ApiError, HttpMethod};
use super::model::{decode_items, list_items};

/// A request body.
pub(crate) enum Payload {
    None,
    Json(Value),
    Form(reqwest::multipart::Form),
}

/// A successful response: its `data` plus what error messages need.
pub(crate) struct Reply {
    method: HttpMethod,
    path: String,
    status: u16,
    pub(crate) data: Value,
}

impl Reply {
    pub(crate) fn new(method: HttpMethod, path: String, status: u16, data: Value) -> Self {
        Self {
            method,
            path,
            status,
            data,
        }
    }

    /// `data` as `T`; see [`ApiError::undecodable`] for the class when it does not fit.
    pub(crate) fn decode<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        serde_json::from_value(self.data)
            .map_err(|e| ApiError::undecodable(self.method, &self.path, self.status, e))
    }

    /// The error for `data` that does not have the expected shape.
    pub(crate) fn mismatch(&self, reason: impl fmt::Display) -> ApiError {
        ApiError::undecodable(self.method, &self.path, self.status, reason)
    }

    /// The items of a list in `data` or `data[key]`; unreadable items are skipped.
    pub(crate) fn list<T: DeserializeOwned>(self, key: &str) -> Result<Vec<T>, ApiError> {
        Ok(self.page(key)?.0)
    }

    /// A page: the list under `key` and `has_more_pages` (absent reads as `false`).
    pub(crate) fn page<T: DeserializeOwned>(
        mut self,
        key: &str,
    ) -> Result<(Vec<T>, bool), ApiError> {
        let mut data = std::mem::take(&mut self.data);
        let more = match &mut data {
            Value::Object(map) => map
                .remove("has_more_pages")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            _ => false,
        };
        match list_items(data, key) {
            Some(items) => Ok((decode_items(items, &self.path), more)),
            None => Err(self.mismatch(format_args!("expected a list in `data` or `data.{key}`"))),
        }
    }
}
