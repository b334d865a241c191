//! `GET /api/v1/runs/ID/events`: a run's journal as Server-Sent Events, live until the run
//! ends. Each event's id is its place in the journal, which only grows, so a client that
//! reconnects with `Last-Event-ID` gets exactly what it missed, whatever happened meanwhile
//! (the journal is what a crash leaves too).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::State;
use super::auth::{ApiError, Path};
use crate::store::RunStatus;

/// How often a live run's journal is read for new entries.
const POLL: Duration = Duration::from_millis(200);
/// Journal entries read at a time: the next page is read once these are sent, so a slow
/// reader of a large run holds back the reading, not the server's memory.
const PAGE: usize = 500;

struct Follow {
    state: Arc<State>,
    run_id: String,
    next: usize,
    ready: std::collections::VecDeque<Event>,
    done: bool,
}

impl Follow {
    /// Reads new journal entries, a page at most; whether more may come (the run goes on,
    /// or the page was full).
    async fn fetch(&mut self) -> Result<bool, String> {
        let store = self.state.store.clone();
        let run_id = self.run_id.clone();
        let from = self.next;
        let (entries, running) = tokio::task::spawn_blocking(move || {
            // Status first: entries read after it include everything up to the end.
            let running = store
                .record(&run_id)
                .map_err(|e| e.to_string())?
                .is_some_and(|r| r.status == RunStatus::Running);
            let entries = store
                .journal_from(&run_id, from, PAGE)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((entries, running))
        })
        .await
        .map_err(|e| e.to_string())??;
        for (i, entry) in entries.iter().enumerate() {
            let i = from + i;
            let data = serde_json::to_string(entry).expect("serialize");
            let kind = serde_json::to_value(&entry.event)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "event".into());
            self.ready
                .push_back(Event::default().id(i.to_string()).event(kind).data(data));
        }
        self.next = from + entries.len();
        Ok(running || entries.len() >= PAGE)
    }
}

#[utoipa::path(get, path = "/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "A run id, or a prefix that names one run"), ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")), responses((status = 200, description = "Server-Sent Events: each journal entry, id = its place in the journal, until the run ends", content_type = "text/event-stream"), (status = 401, description = "no valid token", body = super::openapi::ErrorBody), (status = 429, description = "too many failed authentications from this address", body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody)))]
pub async fn follow(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let record = super::routes::find(&state, id).await?;
    let next = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |last| last + 1);
    let follow = Follow {
        state,
        run_id: record.run_id,
        next,
        ready: Default::default(),
        done: false,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(e) = f.ready.pop_front() {
                return Some((Ok(e), f));
            }
            if f.done {
                return None;
            }
            match f.fetch().await {
                Ok(true) if f.ready.is_empty() => tokio::time::sleep(POLL).await,
                Ok(true) => {}
                // Ended: what was read after the status is the rest of it.
                Ok(false) => f.done = true,
                Err(e) => {
                    f.done = true;
                    f.ready.push_back(Event::default().event("error").data(e));
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
