//! One `Client` method per endpoint of the reference's table (§3, #1–#32), in its order:
//! [`messages`] (#1–#9), [`chats`] (#10–#17), [`workspace`] (#18–#32). Shared helpers here.

mod chats;
mod messages;
mod workspace;

use reqwest::multipart::Part;
use serde::Serialize;

use super::client::Client;
use super::error::{ApiError, ErrorClass, HttpMethod};
use super::reply::{Payload, Reply};

/// A JSON body from a request type. Serialising these plain structs cannot fail; if it ever did,
/// nothing was sent, so the request is invalid as such.
pub(crate) fn json_body(
    verb: HttpMethod,
    path: &str,
    body: &impl Serialize,
) -> Result<Payload, ApiError> {
    serde_json::to_value(body).map(Payload::Json).map_err(|e| {
        ApiError::new(
            ErrorClass::InvalidRequest,
            verb,
            path,
            format!("cannot encode the request body: {e}"),
        )
    })
}

/// A multipart file part.
pub(crate) fn file_part(
    verb: HttpMethod,
    path: &str,
    bytes: Vec<u8>,
    filename: &str,
    content_type: &str,
) -> Result<Part, ApiError> {
    Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str(content_type)
        .map_err(|_| {
            ApiError::new(
                ErrorClass::InvalidRequest,
                verb,
                path,
                format!("invalid content type {content_type:?}"),
            )
        })
}

impl Client {
    pub(crate) async fn send_json(
        &self,
        verb: HttpMethod,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply, ApiError> {
        let payload = json_body(verb, &format!("/{}", segments.join("/")), body)?;
        self.call(verb, segments, &[], payload).await
    }

    pub(crate) async fn get(&self, segments: &[&str]) -> Result<Reply, ApiError> {
        self.call(HttpMethod::Get, segments, &[], Payload::None)
            .await
    }
}
