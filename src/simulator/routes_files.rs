//! File endpoints #18–#22 (§3, §4.3) and the download URL the simulator serves itself.

use std::collections::HashMap;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::render;
use super::reply::{ApiError, ApiResult, FieldError, ok};
use super::state::{FileRecord, FileSource, Shared};
use super::validate::{Fields, JsonObject, check_url};

/// The file part of a multipart form.
pub(crate) struct FilePart {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// A multipart form: the `file` part and the text fields.
pub(crate) struct Form {
    pub file: Option<FilePart>,
    pub fields: HashMap<String, String>,
}

/// Reads a multipart form, refusing a `file` larger than `max_bytes` with a 400 envelope.
pub(crate) async fn read_form(
    multipart: Result<Multipart, MultipartRejection>,
    max_bytes: usize,
) -> Result<Form, ApiError> {
    let bad = |msg: String| ApiError::invalid(FieldError::body("file", msg));
    let mut multipart = multipart.map_err(|e| bad(format!("expected multipart/form-data: {e}")))?;
    let mut form = Form {
        file: None,
        fields: HashMap::new(),
    };
    let too_large = || format!("the file is larger than {max_bytes} bytes");
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(format!("malformed multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|_| bad(too_large()))? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > max_bytes {
                    return Err(bad(too_large()));
                }
            }
            form.file = Some(FilePart {
                filename,
                content_type,
                bytes,
            });
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| bad(format!("unreadable field {name}: {e}")))?;
            form.fields.insert(name, text);
        }
    }
    Ok(form)
}

/// A new uploaded file; the MIME type comes from the declared type or the extension.
pub(crate) fn new_file(
    filename: String,
    content_type: Option<String>,
    bytes: Vec<u8>,
    uploaded_by_email: String,
) -> FileRecord {
    FileRecord {
        uid: Uuid::new_v4().to_string(),
        mimetype: content_type.unwrap_or_else(|| mime_from_name(&filename).to_owned()),
        filename,
        size: bytes.len() as u64,
        uploaded_by_email,
        uploaded_at: Utc::now(),
        source: FileSource::Bytes(bytes),
        listed: true,
    }
}

/// MIME type guessed from a file name's extension.
pub(crate) fn mime_from_name(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// A plausible, deterministic size for a file known only by URL: 1 KB to 2 MB from an FNV-1a
/// hash of the URL.
pub(crate) fn fabricated_size(url: &str) -> u64 {
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    1024 + hash % (2 * 1024 * 1024 - 1024)
}

/// #18 `POST /files`: upload by public URL. The URL is recorded, never fetched (the network is
/// closed); size and MIME type are made up from the name.
pub(crate) async fn upload_by_url(
    State(sim): State<Shared>,
    JsonObject(body): JsonObject,
) -> ApiResult {
    let mut f = Fields::new(&body);
    let url = f.req_str("download_url");
    if let Some(Err(msg)) = url.as_deref().map(check_url) {
        f.error("download_url", msg);
    }
    let filename = f.opt_str("filename").filter(|n| !n.trim().is_empty());
    let content_type = f.opt_str("content_type").filter(|t| !t.is_empty());
    f.finish()?;
    let url = url.expect("required");
    let filename = filename.unwrap_or_else(|| {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let last = path.rsplit('/').next().unwrap_or_default();
        if last.is_empty() || last.contains(':') {
            "file".to_owned()
        } else {
            last.to_owned()
        }
    });
    let mut world = sim.world();
    let record = FileRecord {
        uid: Uuid::new_v4().to_string(),
        mimetype: content_type.unwrap_or_else(|| mime_from_name(&filename).to_owned()),
        size: fabricated_size(&url),
        filename,
        uploaded_by_email: world.owner().email.clone(),
        uploaded_at: Utc::now(),
        source: FileSource::Url(url),
        listed: true,
    };
    let data = render::file(&sim, &record, true);
    world.files.push(record);
    Ok(ok(data))
}

/// #19 `POST /files_upload`: multipart `file`, optional `filename` and `content_type` fields.
pub(crate) async fn upload_multipart(
    State(sim): State<Shared>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let mut form = read_form(multipart, sim.config.max_upload_bytes).await?;
    let Some(file) = form.file.take() else {
        return Err(ApiError::invalid(FieldError::body(
            "file",
            "field required",
        )));
    };
    let filename = form
        .fields
        .remove("filename")
        .filter(|n| !n.trim().is_empty())
        .or(file.filename)
        .unwrap_or_else(|| "file".to_owned());
    let content_type = form
        .fields
        .remove("content_type")
        .filter(|t| !t.is_empty())
        .or(file.content_type)
        .filter(|t| t != "application/octet-stream" || mime_from_name(&filename) == t);
    let mut world = sim.world();
    let record = new_file(
        filename,
        content_type,
        file.bytes,
        world.owner().email.clone(),
    );
    let data = render::file(&sim, &record, true);
    world.files.push(record);
    Ok(ok(data))
}

/// #20 `GET /files`: a flat array (§2.2) without download URLs; `filename` filters by
/// case-insensitive substring.
pub(crate) async fn list(
    State(sim): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let needle = query
        .get("filename")
        .map(|n| n.to_lowercase())
        .unwrap_or_default();
    let world = sim.world();
    let files: Vec<Value> = world
        .files
        .iter()
        .filter(|f| f.listed && f.filename.to_lowercase().contains(&needle))
        .map(|f| render::file(&sim, f, false))
        .collect();
    Ok(ok(json!(files)))
}

/// #21 `GET /files/{file_uid}`: details with a temporary download URL.
pub(crate) async fn get(State(sim): State<Shared>, Path(uid): Path<String>) -> ApiResult {
    let world = sim.world();
    match world.file(&uid).filter(|f| f.listed) {
        Some(f) => Ok(ok(render::file(&sim, f, true))),
        None => Err(ApiError::not_found("File")),
    }
}

/// #22 `DELETE /files/{file_uid}`: answers `{"status":"ok","data":null}` (§10.1 #9).
pub(crate) async fn delete(State(sim): State<Shared>, Path(uid): Path<String>) -> ApiResult {
    let mut world = sim.world();
    let before = world.files.len();
    world.files.retain(|f| !(f.listed && f.uid == uid));
    if world.files.len() == before {
        return Err(ApiError::not_found("File"));
    }
    Ok(ok(Value::Null))
}

/// `GET /_sim/files/{uid}/download`: the target of temporary download URLs. Uploaded bytes are
/// served as uploaded; files known only by URL serve zero bytes of their fabricated size, with
/// the recorded URL in `Content-Location`.
pub(crate) async fn download(State(sim): State<Shared>, Path(uid): Path<String>) -> Response {
    let world = sim.world();
    let Some(f) = world.file(&uid) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut response = match &f.source {
        FileSource::Bytes(b) => b.clone().into_response(),
        FileSource::Url(url) => {
            let mut r = vec![0; f.size as usize].into_response();
            if let Ok(v) = header::HeaderValue::from_str(url) {
                r.headers_mut().insert(header::CONTENT_LOCATION, v);
            }
            r
        }
    };
    if let Ok(v) = header::HeaderValue::from_str(&f.mimetype) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}
