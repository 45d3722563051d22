//! Chats: listing and paging (#10), details and updates (#11–#12), history (#13), labels
//! (#14–#16) and notes (#17).

use serde_json::json;

use crate::timelines::client::Client;
use crate::timelines::error::{ApiError, ErrorClass, HttpMethod};
use crate::timelines::model::{Chat, ChatPage, MessageAccepted, MessagePage, parse_labels};
use crate::timelines::reply::{Payload, Reply};
use crate::timelines::request::{ChatFilter, ChatUpdate, MessageQuery};

/// Safety stop for [`Client::list_all_chats`]: 10,000 pages of 50 is 500,000 chats, far beyond
/// any workspace, so reaching it means the server ignores `page` and would loop forever.
const MAX_CHAT_PAGES: u32 = 10_000;

impl Client {
    /// #10 `GET /chats`: one page (50 chats) matching `filter`.
    pub async fn list_chats(&self, filter: &ChatFilter) -> Result<ChatPage, ApiError> {
        let reply = self
            .call(
                HttpMethod::Get,
                &["chats"],
                &filter.to_query(),
                Payload::None,
            )
            .await?;
        let (chats, has_more_pages) = reply.page("chats")?;
        Ok(ChatPage {
            chats,
            has_more_pages,
        })
    }

    /// #10, every page: all chats matching `filter`, from `filter.page` (default 1) until
    /// `has_more_pages` is false or a page comes back empty. One request per page; an error
    /// stops the walk and loses the pages read so far, so large syncs should page with
    /// [`Client::list_chats`] and store each page.
    pub async fn list_all_chats(&self, filter: &ChatFilter) -> Result<Vec<Chat>, ApiError> {
        let mut filter = filter.clone();
        let first = filter.page.unwrap_or(1);
        let mut all = Vec::new();
        for page in first..first.saturating_add(MAX_CHAT_PAGES) {
            filter.page = Some(page);
            let ChatPage {
                chats,
                has_more_pages,
            } = self.list_chats(&filter).await?;
            let empty = chats.is_empty();
            all.extend(chats);
            if !has_more_pages || empty {
                return Ok(all);
            }
        }
        Err(ApiError::new(
            ErrorClass::InvalidRequest,
            HttpMethod::Get,
            "/chats",
            format!("still more pages after {MAX_CHAT_PAGES}: the server seems to ignore `page`"),
        ))
    }

    /// #11 `GET /chats/{chat_id}`: a chat's details.
    pub async fn get_chat(&self, chat_id: i64) -> Result<Chat, ApiError> {
        self.get(&["chats", &chat_id.to_string()]).await?.decode()
    }

    /// #12 `PATCH /chats/{chat_id}`: renames, (un)assigns, closes/reopens or marks read. The
    /// updated chat when the API returns one (not every version does).
    pub async fn update_chat(
        &self,
        chat_id: i64,
        update: &ChatUpdate,
    ) -> Result<Option<Chat>, ApiError> {
        let reply = self
            .send_json(HttpMethod::Patch, &["chats", &chat_id.to_string()], update)
            .await?;
        Ok(serde_json::from_value(reply.data).ok())
    }

    /// #13 `GET /chats/{chat_id}/messages`: one page of the history matching `query`.
    pub async fn chat_messages(
        &self,
        chat_id: i64,
        query: &MessageQuery,
    ) -> Result<MessagePage, ApiError> {
        let id = chat_id.to_string();
        let reply = self
            .call(
                HttpMethod::Get,
                &["chats", &id, "messages"],
                &query.to_query(),
                Payload::None,
            )
            .await?;
        let (messages, has_more_pages) = reply.page("messages")?;
        Ok(MessagePage {
            messages,
            has_more_pages,
        })
    }

    /// #14 `GET /chats/{chat_id}/labels`: the chat's labels.
    pub async fn chat_labels(&self, chat_id: i64) -> Result<Vec<String>, ApiError> {
        let reply = self.get(&["chats", &chat_id.to_string(), "labels"]).await?;
        labels_of(reply)
    }

    /// #15 `PUT /chats/{chat_id}/labels`: ADDS `labels` to the chat's labels; returns the set.
    pub async fn add_chat_labels(
        &self,
        chat_id: i64,
        labels: &[String],
    ) -> Result<Vec<String>, ApiError> {
        let id = chat_id.to_string();
        let body = json!({ "labels": labels });
        labels_of(
            self.send_json(HttpMethod::Put, &["chats", &id, "labels"], &body)
                .await?,
        )
    }

    /// #16 `POST /chats/{chat_id}/labels`: REPLACES all labels with `labels` (every label not
    /// listed is dropped); returns the set.
    pub async fn replace_chat_labels(
        &self,
        chat_id: i64,
        labels: &[String],
    ) -> Result<Vec<String>, ApiError> {
        let id = chat_id.to_string();
        let body = json!({ "labels": labels });
        labels_of(
            self.send_json(HttpMethod::Post, &["chats", &id, "labels"], &body)
                .await?,
        )
    }

    /// #17 `POST /chats/{chat_id}/notes`: adds a note (private unless `is_private` is false).
    pub async fn add_note(
        &self,
        chat_id: i64,
        text: &str,
        is_private: bool,
    ) -> Result<MessageAccepted, ApiError> {
        let id = chat_id.to_string();
        let body = json!({ "text": text, "is_private": is_private });
        self.send_json(HttpMethod::Post, &["chats", &id, "notes"], &body)
            .await?
            .decode()
    }
}

/// Labels from a labels reply, or an error naming the endpoint when it has no list.
fn labels_of(mut reply: Reply) -> Result<Vec<String>, ApiError> {
    parse_labels(std::mem::take(&mut reply.data))
        .ok_or_else(|| reply.mismatch("expected a list of labels"))
}
