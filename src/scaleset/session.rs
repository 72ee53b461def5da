//! The message session (§3–5): create, refresh, delete; the long poll, acknowledgement and
//! acquisition, all with the session's queue token (not the admin one). A queue call the
//! service answers 401 refreshes the session (a new queue token) and is made once more.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tracing::debug;

use super::client::{Request, ScaleSetClient};
use super::error::ScaleSetError;
use super::types::{List, Message, SessionBody, Statistics};
use crate::secret::Secret;

/// The long poll's timeout: the service holds a poll about 50 s.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// Other queue calls.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An open message session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// Its scale set.
    pub scale_set: u64,
    /// The queue URL, opaque (its query is kept).
    queue_url: String,
    /// The queue bearer.
    queue_token: Secret,
    /// The counts when it was opened or refreshed.
    pub statistics: Statistics,
}

impl Session {
    fn from_body(scale_set: u64, body: SessionBody) -> Self {
        Session {
            id: body.session_id,
            scale_set,
            queue_url: body.message_queue_url,
            queue_token: Secret::new(&body.message_queue_access_token),
            statistics: body.statistics.unwrap_or_default(),
        }
    }

    /// `queue_url` with `lastMessageId` when `last` > 0.
    fn poll_url(&self, last: i64) -> String {
        if last <= 0 {
            return self.queue_url.clone();
        }
        let sep = if self.queue_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}lastMessageId={last}", self.queue_url)
    }

    /// The acknowledgement URL of message `id`: the queue path plus `/{id}`, query kept.
    fn ack_url(&self, id: i64) -> String {
        match self.queue_url.split_once('?') {
            Some((path, query)) => format!("{}/{id}?{query}", path.trim_end_matches('/')),
            None => format!("{}/{id}", self.queue_url.trim_end_matches('/')),
        }
    }
}

impl ScaleSetClient {
    /// Opens the message session of scale set `set` as `owner` (the host name). Another live
    /// session is a conflict ([`ScaleSetError::is_conflict`]); a lost answer is not tried
    /// again here (the retry would conflict with the session the first try opened).
    pub async fn create_session(&self, set: u64, owner: &str) -> Result<Session, ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{set}/sessions");
        let body = json!({"ownerName": owner});
        let reply = self.tenant(Method::POST, &path, Some(&body), false).await?;
        if !(200..300).contains(&reply.status) {
            return Err(reply.error());
        }
        Ok(Session::from_body(set, reply.json()?))
    }

    /// A new queue token for `session` (§7.2); 404 means the service dropped it.
    pub async fn refresh_session(&self, session: &mut Session) -> Result<(), ScaleSetError> {
        let path = format!(
            "_apis/runtime/runnerscalesets/{}/sessions/{}",
            session.scale_set, session.id
        );
        let reply = self.tenant(Method::PATCH, &path, None, true).await?;
        if !(200..300).contains(&reply.status) {
            return Err(reply.error());
        }
        *session = Session::from_body(session.scale_set, reply.json()?);
        debug!(session = %session.id, "scale-set session refreshed");
        Ok(())
    }

    /// Closes `session`; one the service no longer knows is closed already.
    pub async fn delete_session(&self, session: &Session) -> Result<(), ScaleSetError> {
        let path = format!(
            "_apis/runtime/runnerscalesets/{}/sessions/{}",
            session.scale_set, session.id
        );
        let reply = self.tenant(Method::DELETE, &path, None, true).await?;
        match reply.status {
            200..=299 | 400 | 404 => Ok(()),
            _ => Err(reply.error()),
        }
    }

    /// One queue call with the queue token; a 401 refreshes the session and tries once more.
    async fn queue_call(
        &self,
        session: &mut Session,
        method: Method,
        url: impl Fn(&Session) -> String,
        body: Option<&Value>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<super::client::Reply, ScaleSetError> {
        for first in [true, false] {
            let token = session.queue_token.clone();
            let req = Request {
                method: method.clone(),
                url: url(session),
                bearer: &token,
                body,
                headers,
                timeout,
                retry: true,
            };
            let reply = self.send(&req).await?;
            if reply.status == 401 && first {
                self.refresh_session(session).await?;
                continue;
            }
            return Ok(reply);
        }
        unreachable!("the loop returns on its second turn")
    }

    /// The long poll: the next message after `last`, or `None` when the service had none
    /// for about 50 s (202). `capacity` tells the service how many runners corral can run.
    pub async fn get_message(
        &self,
        session: &mut Session,
        last: i64,
        capacity: u32,
    ) -> Result<Option<Message>, ScaleSetError> {
        let headers = [
            (
                "Accept",
                "application/json; api-version=6.0-preview".to_string(),
            ),
            ("X-ScaleSetMaxCapacity", capacity.to_string()),
        ];
        let reply = self
            .queue_call(
                session,
                Method::GET,
                |s| s.poll_url(last),
                None,
                &headers,
                POLL_TIMEOUT,
            )
            .await?;
        match reply.status {
            202 | 204 => Ok(None),
            200 => reply.json().map(Some),
            _ => Err(reply.error()),
        }
    }

    /// Acknowledges message `id` (unacknowledged messages come again).
    pub async fn ack(&self, session: &mut Session, id: i64) -> Result<(), ScaleSetError> {
        let reply = self
            .queue_call(
                session,
                Method::DELETE,
                |s| s.ack_url(id),
                None,
                &[],
                TIMEOUT,
            )
            .await?;
        match reply.status {
            200..=299 => Ok(()),
            _ => Err(reply.error()),
        }
    }

    /// Acquires the jobs `ids` for the scale set; returns those it got.
    pub async fn acquire_jobs(
        &self,
        session: &mut Session,
        ids: &[i64],
    ) -> Result<Vec<i64>, ScaleSetError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!(ids);
        let path = format!(
            "_apis/runtime/runnerscalesets/{}/acquirejobs",
            session.scale_set
        );
        let tenant_url = self.tenant_url(&path).await?;
        let url = |_: &Session| tenant_url.clone();
        let reply = self
            .queue_call(session, Method::POST, url, Some(&body), &[], TIMEOUT)
            .await?;
        if !(200..300).contains(&reply.status) {
            return Err(reply.error());
        }
        Ok(reply.json::<List<i64>>()?.value)
    }
}
