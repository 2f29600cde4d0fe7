//! Watches: a stream of `{"type": ..., "object": ...}` lines (or protobuf WatchEvent frames), from a
//! resourceVersion or with the initial state first, filtered by selectors, with bookmarks and a timeout.

use super::error::ApiError;
use super::negotiation::Encoding;
use super::objects::{Filter, Query, prefix, served, served_bytes};
use super::shared_events::SharedEvent;
use super::{ApiServer, Target};
use crate::api::protobuf;
use crate::api::resources::ResourceType;
use crate::api::table;
use crate::store::{EventKind, Revision};
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How often an idle watch with bookmarks enabled is told the current revision.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// How long a watch without timeoutSeconds lasts (Kubernetes picks 30-60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// How each event's object is rendered.
#[derive(Clone, Copy)]
pub enum Render {
    /// The object itself, in JSON lines or protobuf frames.
    Object(Encoding),
    /// A one-row meta.k8s.io/v1 Table in JSON, as `kubectl get -w` asks for, its row with what is asked.
    Table(table::IncludeObject),
}

impl Render {
    fn media_type(self) -> &'static str {
        match self {
            Render::Object(Encoding::Protobuf) => protobuf::WATCH_MEDIA_TYPE,
            Render::Object(Encoding::Json) | Render::Table(_) => "application/json",
        }
    }

    /// One event as it goes on the stream; `None` when the object cannot be written in protobuf.
    fn event(self, kind: &str, object: &Value) -> Option<bytes::Bytes> {
        match self {
            Render::Object(Encoding::Protobuf) => match protobuf::watch_frame(kind, object) {
                Ok(frame) => Some(frame.into()),
                Err(error) => {
                    tracing::error!(%error, "a watch event could not be written as protobuf");
                    None
                }
            },
            Render::Object(Encoding::Json) | Render::Table(_) => {
                let mut text = json!({"type": kind, "object": object}).to_string();
                text.push('\n');
                Some(text.into())
            }
        }
    }

    /// One change as it goes on the stream: in JSON, the object's shared serialization in an event line.
    fn shared_event(
        self,
        kind: &str,
        change: &SharedEvent,
        resource: &ResourceType,
    ) -> Option<bytes::Bytes> {
        match self {
            Render::Object(Encoding::Json) => Some(json_event(kind, change.json()?)),
            Render::Object(Encoding::Protobuf) | Render::Table(_) => {
                let object = change.object()?.clone();
                self.event(kind, &self.object(resource, object, change.revision()))
            }
        }
    }

    /// An object the watch saw as this rendering shows it.
    fn object(self, resource: &ResourceType, object: Value, revision: Revision) -> Value {
        match self {
            Render::Object(_) => object,
            Render::Table(include) => table::build(
                resource.table,
                &[object],
                &revision.to_string(),
                None,
                include,
            ),
        }
    }
}

/// A JSON watch event line around an object already written as JSON.
fn json_event(kind: &str, object: &[u8]) -> bytes::Bytes {
    let mut line = Vec::with_capacity(object.len() + kind.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    line.into()
}

fn bookmark(resource: &ResourceType, revision: Revision, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata})
}

impl ApiServer {
    /// Starts a watch and returns its streaming response.
    pub fn watch(&self, target: &Target, query: &Query, how: Render) -> Result<Response, ApiError> {
        let resource = target.resource;
        let filter = Filter::new(resource, query)?;
        let rv = query
            .resource_version
            .as_deref()
            .filter(|rv| !rv.is_empty());
        let bookmarks = query.allow_watch_bookmarks.unwrap_or(false);
        let send_initial = query.send_initial_events.unwrap_or(false);
        if send_initial && !bookmarks {
            return Err(ApiError::Invalid {
                kind: "ListOptions.meta.k8s.io".into(),
                name: String::new(),
                causes: vec![crate::api::validation::Cause::forbidden(
                    "allowWatchBookmarks",
                    "allowWatchBookmarks required when sendInitialEvents is true",
                )],
            });
        }
        // With no resourceVersion (or "0"), or when asked, the watch starts with the current state.
        let initial_state = send_initial || matches!(rv, None | Some("0"));
        // The current state, each object rendered as it is read (tables need the list's revision first).
        let mut initial: Vec<Value> = Vec::new();
        let mut rendered: Vec<Option<bytes::Bytes>> = Vec::new();
        let start = if initial_state {
            let (revision, _) = self.list_stored(
                target,
                &Query {
                    label_selector: query.label_selector.clone(),
                    field_selector: query.field_selector.clone(),
                    ..Query::default()
                },
                |stored, revision| {
                    match how {
                        Render::Object(Encoding::Json) if target.conversion.is_none() => rendered
                            .push(Some(json_event("ADDED", &served_bytes(stored, revision)?))),
                        Render::Object(_) => rendered
                            .push(how.event("ADDED", &target.to_served(served(stored, revision)?))),
                        Render::Table(_) => initial.push(served(stored, revision)?),
                    }
                    Ok(())
                },
            )?;
            revision
        } else {
            let rv = rv.unwrap_or("0");
            rv.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))?
        };
        let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::convert::Infallible>>(64);
        // Sends one rendered event, counted; false when the stream has ended.
        let sent = self.metrics.watch_events(
            resource,
            target.conversion.map_or(resource.version, |c| c.version),
        );
        let send_bytes = {
            let tx = tx.clone();
            move |bytes: Option<bytes::Bytes>| {
                let (tx, sent) = (tx.clone(), sent.clone());
                async move {
                    let Some(bytes) = bytes else { return false };
                    let delivered = tx.send(Ok(bytes)).await.is_ok();
                    if delivered {
                        sent.inc();
                    }
                    delivered
                }
            }
        };
        // Sends one event, its object as the version the request addresses shows it; false when the stream
        // has ended.
        let served_as = target.clone();
        let converts = served_as.conversion.is_some();
        let send = {
            let send_bytes = send_bytes.clone();
            let served_as = served_as.clone();
            move |kind: &'static str, object: Value| {
                send_bytes(how.event(kind, &served_as.to_served(object)))
            }
        };
        let shared = self.shared_events.clone();
        let events = self
            .store
            .watch(&prefix(resource, target.namespace.as_deref()), start);
        let timeout = query
            .timeout_seconds
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let closed = async move {
                let _ = closing.wait_for(|closed| *closed).await;
            };
            tokio::pin!(closed);
            let mut events = match events {
                Ok(events) => events,
                Err(e) => {
                    send("ERROR", ApiError::from(e).status()).await;
                    return;
                }
            };
            for event in rendered {
                if !send_bytes(event).await {
                    return;
                }
            }
            for object in initial {
                if !send("ADDED", how.object(resource, object, start)).await {
                    return;
                }
            }
            if send_initial && !send("BOOKMARK", bookmark(resource, start, true)).await {
                return;
            }
            let mut last = start;
            let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
            ticker.tick().await;
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = ticker.tick(), if bookmarks => {
                        if !send("BOOKMARK", bookmark(resource, last, false)).await {
                            return;
                        }
                        continue;
                    }
                    () = &mut deadline => return,
                    () = tx.closed() => return,
                    () = &mut closed => return,
                };
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(e)) => {
                        send("ERROR", ApiError::from(e).status()).await;
                        return;
                    }
                    None => return,
                };
                last = event.revision;
                let kind = event.kind;
                let change = shared.get(event);
                let readable = match how {
                    Render::Object(Encoding::Json) if !converts => change.json().is_some(),
                    Render::Object(_) | Render::Table(_) => change.object().is_some(),
                };
                if !readable {
                    continue;
                }
                // Without selectors every object matches: the one before need not be read.
                let (before, now) = if filter.selects_everything() {
                    (change.replaced().then_some(true), true)
                } else {
                    (change.matched_before(&filter), change.matches(&filter))
                };
                let kind = match (kind, before, now) {
                    (EventKind::Delete, _, true) => "DELETED",
                    (EventKind::Put, None | Some(false), true) => "ADDED",
                    (EventKind::Put, Some(true), true) => "MODIFIED",
                    (EventKind::Put, Some(true), false) => "DELETED",
                    _ => continue,
                };
                let event = match (converts, change.object()) {
                    (true, Some(object)) if matches!(how, Render::Object(_)) => {
                        how.event(kind, &served_as.to_served(object.clone()))
                    }
                    _ => how.shared_event(kind, &change, resource),
                };
                if !send_bytes(event).await {
                    return;
                }
            }
        });
        let mut response = Body::from_stream(ReceiverStream::new(rx)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(how.media_type()),
        );
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(response)
    }
}
