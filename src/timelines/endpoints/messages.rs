//! Sending (#1–#5) and reading messages, their status history and reactions (#6–#9).

use reqwest::multipart::Form;
use serde_json::json;

use super::file_part;
use crate::timelines::client::Client;
use crate::timelines::error::{ApiError, HttpMethod};
use crate::timelines::model::{Message, MessageAccepted, Reactions, StatusEntry};
use crate::timelines::reply::Payload;
use crate::timelines::request::{SendInChat, SendToChatName, SendToJid, SendToPhone};

impl Client {
    /// #1 `POST /messages`: sends to a phone number, creating the chat if needed. Uses one
    /// messaging-quota unit (two with text and a file).
    pub async fn send_to_phone(&self, message: &SendToPhone) -> Result<MessageAccepted, ApiError> {
        self.send_json(HttpMethod::Post, &["messages"], message)
            .await?
            .decode()
    }

    /// #2 `POST /chats/{chat_id}/messages`: sends or replies (`reply_to`) in an existing chat.
    pub async fn send_in_chat(
        &self,
        chat_id: i64,
        message: &SendInChat,
    ) -> Result<MessageAccepted, ApiError> {
        let id = chat_id.to_string();
        self.send_json(HttpMethod::Post, &["chats", &id, "messages"], message)
            .await?
            .decode()
    }

    /// #3 `POST /messages/to_jid`: sends to a WhatsApp JID.
    pub async fn send_to_jid(&self, message: &SendToJid) -> Result<MessageAccepted, ApiError> {
        self.send_json(HttpMethod::Post, &["messages", "to_jid"], message)
            .await?
            .decode()
    }

    /// #4 `POST /messages/to_chat_name`: sends to the chat with this exact name.
    #[deprecated(note = "deprecated by TimelinesAI; use send_in_chat with the chat id")]
    pub async fn send_to_chat_name(
        &self,
        message: &SendToChatName,
    ) -> Result<MessageAccepted, ApiError> {
        self.send_json(HttpMethod::Post, &["messages", "to_chat_name"], message)
            .await?
            .decode()
    }

    /// #5 `POST /chats/{chat_id}/voice_message`: sends a voice note (multipart field `file`;
    /// ogg, oga or mp3, e.g. `audio/ogg`).
    pub async fn send_voice_message(
        &self,
        chat_id: i64,
        audio: Vec<u8>,
        filename: &str,
        content_type: &str,
    ) -> Result<MessageAccepted, ApiError> {
        let id = chat_id.to_string();
        let segments = ["chats", &id, "voice_message"];
        let path = format!("/chats/{id}/voice_message");
        let part = file_part(HttpMethod::Post, &path, audio, filename, content_type)?;
        let form = Form::new().part("file", part);
        self.call(HttpMethod::Post, &segments, &[], Payload::Form(form))
            .await?
            .decode()
    }

    /// #6 `GET /messages/{message_uid}`: a message's details.
    pub async fn get_message(&self, message_uid: &str) -> Result<Message, ApiError> {
        self.get(&["messages", message_uid]).await?.decode()
    }

    /// #7 `GET /messages/{message_uid}/status_history`: the delivery timeline.
    pub async fn message_status_history(
        &self,
        message_uid: &str,
    ) -> Result<Vec<StatusEntry>, ApiError> {
        self.get(&["messages", message_uid, "status_history"])
            .await?
            .list("status_history")
    }

    /// #8 `GET /messages/{message_uid}/reactions`: the current reactions.
    pub async fn message_reactions(&self, message_uid: &str) -> Result<Reactions, ApiError> {
        let reply = self.get(&["messages", message_uid, "reactions"]).await?;
        Ok(Reactions::from_value(&reply.data))
    }

    /// #9 `PATCH /messages/{message_uid}/reactions`: sets the caller's reaction; `""` clears it.
    pub async fn set_reaction(&self, message_uid: &str, reaction: &str) -> Result<(), ApiError> {
        let body = json!({ "reaction": reaction });
        self.send_json(
            HttpMethod::Patch,
            &["messages", message_uid, "reactions"],
            &body,
        )
        .await?;
        Ok(())
    }
}
