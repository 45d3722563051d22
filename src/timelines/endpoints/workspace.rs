//! Files (#18–#22), WhatsApp accounts (#23), teammates and invitations (#24, #27), quotas and
//! workspace (#25–#26), webhook subscriptions (#28–#32).

use reqwest::multipart::Form;
use serde_json::Value;

use super::file_part;
use crate::timelines::client::Client;
use crate::timelines::error::{ApiError, ErrorClass, HttpMethod};
use crate::timelines::model::{FileInfo, Quotas, Teammate, Webhook, WhatsappAccount, Workspace};
use crate::timelines::reply::Payload;
use crate::timelines::request::{Invitation, NewWebhook, UploadFromUrl, WebhookUpdate};

impl Client {
    /// #18 `POST /files`: has the API fetch a file from a public URL.
    pub async fn upload_file_from_url(&self, file: &UploadFromUrl) -> Result<FileInfo, ApiError> {
        self.send_json(HttpMethod::Post, &["files"], file)
            .await?
            .decode()
    }

    /// #19 `POST /files_upload`: uploads file bytes (multipart `file`, `filename`,
    /// `content_type`).
    pub async fn upload_file(
        &self,
        bytes: Vec<u8>,
        filename: &str,
        content_type: &str,
    ) -> Result<FileInfo, ApiError> {
        let part = file_part(
            HttpMethod::Post,
            "/files_upload",
            bytes,
            filename,
            content_type,
        )?;
        let form = Form::new()
            .part("file", part)
            .text("filename", filename.to_owned())
            .text("content_type", content_type.to_owned());
        self.call(
            HttpMethod::Post,
            &["files_upload"],
            &[],
            Payload::Form(form),
        )
        .await?
        .decode()
    }

    /// #20 `GET /files`: uploaded files, optionally those whose name contains `filename`
    /// (case-insensitive). Items carry no download URL.
    pub async fn list_files(&self, filename: Option<&str>) -> Result<Vec<FileInfo>, ApiError> {
        let query: Vec<_> = filename
            .map(|f| ("filename", f.to_owned()))
            .into_iter()
            .collect();
        self.call(HttpMethod::Get, &["files"], &query, Payload::None)
            .await?
            .list("files")
    }

    /// #21 `GET /files/{file_uid}`: a file's details with a temporary download URL.
    pub async fn get_file(&self, file_uid: &str) -> Result<FileInfo, ApiError> {
        self.get(&["files", file_uid]).await?.decode()
    }

    /// #22 `DELETE /files/{file_uid}`: deletes an uploaded file (an empty 2xx body is success).
    pub async fn delete_file(&self, file_uid: &str) -> Result<(), ApiError> {
        self.call(HttpMethod::Delete, &["files", file_uid], &[], Payload::None)
            .await?;
        Ok(())
    }

    /// #23 `GET /whatsapp_accounts`: the connected WhatsApp numbers.
    pub async fn whatsapp_accounts(&self) -> Result<Vec<WhatsappAccount>, ApiError> {
        self.get(&["whatsapp_accounts"])
            .await?
            .list("whatsapp_accounts")
    }

    /// #24 `GET /workspace/teammates`: the workspace's teammates.
    pub async fn teammates(&self) -> Result<Vec<Teammate>, ApiError> {
        self.get(&["workspace", "teammates"])
            .await?
            .list("teammates")
    }

    /// #25 `GET /workspace/quotas`: quotas and utilisation. If that path is unknown (404), falls
    /// back to #26 `GET /workspace`, which carries the same blocks (reference §10.1 item 2).
    /// `raw` is the data of whichever answered.
    pub async fn quotas(&self) -> Result<Quotas, ApiError> {
        match self.get(&["workspace", "quotas"]).await {
            Err(e) if e.class == ErrorClass::NotFound => self.get(&["workspace"]).await?.decode(),
            other => other?.decode(),
        }
    }

    /// #26 `GET /workspace`: workspace identity plus its quota blocks.
    pub async fn workspace(&self) -> Result<Workspace, ApiError> {
        self.get(&["workspace"]).await?.decode()
    }

    /// #27 `POST /workspace/invitations`: invites a teammate. The invited teammate when the API
    /// returns one.
    pub async fn invite_teammate(
        &self,
        invitation: &Invitation,
    ) -> Result<Option<Teammate>, ApiError> {
        let reply = self
            .send_json(HttpMethod::Post, &["workspace", "invitations"], invitation)
            .await?;
        Ok(match reply.data {
            data @ Value::Object(_) => serde_json::from_value(data).ok(),
            _ => None,
        })
    }

    /// #28 `GET /webhooks`: the webhook subscriptions.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, ApiError> {
        self.get(&["webhooks"]).await?.list("webhooks")
    }

    /// #29 `POST /webhooks`: subscribes `url` to one event type.
    pub async fn create_webhook(&self, webhook: &NewWebhook) -> Result<Webhook, ApiError> {
        self.send_json(HttpMethod::Post, &["webhooks"], webhook)
            .await?
            .decode()
    }

    /// #30 `GET /webhooks/{webhook_id}`: one subscription (any id text is accepted).
    pub async fn get_webhook(&self, webhook_id: &str) -> Result<Webhook, ApiError> {
        self.get(&["webhooks", webhook_id]).await?.decode()
    }

    /// #31 `PUT /webhooks/{webhook_id}`: a partial update; omitted fields stay as they are.
    pub async fn update_webhook(
        &self,
        webhook_id: &str,
        update: &WebhookUpdate,
    ) -> Result<Webhook, ApiError> {
        self.send_json(HttpMethod::Put, &["webhooks", webhook_id], update)
            .await?
            .decode()
    }

    /// #32 `DELETE /webhooks/{webhook_id}`: deletes a subscription (any 2xx body is success).
    pub async fn delete_webhook(&self, webhook_id: &str) -> Result<(), ApiError> {
        self.call(
            HttpMethod::Delete,
            &["webhooks", webhook_id],
            &[],
            Payload::None,
        )
        .await?;
        Ok(())
    }
}
