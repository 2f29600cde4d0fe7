//! The key-value app: a wasi:http component that keeps each value as a file in its data directory
//! (`DATA_DIR`, default `/data`: a persistentVolumeClaim in its StatefulSet), so what it stores outlives its
//! pod. `PUT /KEY` stores the request body, `GET /KEY` answers it, `DELETE /KEY` removes it, `GET /` lists the
//! keys with the name of the pod serving (`POD_NAME`), `/healthz` answers `ok`. A key is 1 to 128 of
//! `[A-Za-z0-9._-]`, not starting with `.`: never a path.

use std::io::Read as _;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(KeyValue);

struct KeyValue;

/// The largest value kept.
const MAX_VALUE: usize = 1 << 20;

fn data_dir() -> std::path::PathBuf {
    std::env::var("DATA_DIR")
        .unwrap_or_else(|_| "/data".into())
        .into()
}

/// A key that is safe as one file name.
fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn read_body(request: IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request.consume().map_err(|()| "no request body")?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| "no request stream")?;
        stream
            .take(MAX_VALUE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
    }
    if bytes.len() > MAX_VALUE {
        return Err(format!("a value holds at most {MAX_VALUE} bytes"));
    }
    Ok(bytes)
}

/// Stores a value whole or not at all: written aside, then renamed over the old one.
fn store(key: &str, value: &[u8]) -> std::io::Result<()> {
    let dir = data_dir();
    let aside = dir.join(format!(".{key}.new"));
    std::fs::write(&aside, value)?;
    std::fs::rename(&aside, dir.join(key))
}

fn list() -> std::io::Result<Vec<String>> {
    let mut keys: Vec<String> = std::fs::read_dir(data_dir())?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| valid_key(name))
        .collect();
    keys.sort();
    Ok(keys)
}

fn answer(method: Method, path: &str, request: IncomingRequest) -> (u16, Vec<u8>) {
    let key = path.trim_start_matches('/');
    match (method, key) {
        (_, "healthz") => (200, b"ok\n".to_vec()),
        (Method::Get, "") => match list() {
            Ok(keys) => {
                let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "an unnamed pod".into());
                (200, format!("{pod}: {}\n", keys.join(" ")).into_bytes())
            }
            Err(error) => (500, format!("cannot list {}: {error}\n", data_dir().display()).into_bytes()),
        },
        (_, key) if !valid_key(key) => (
            400,
            b"a key is 1 to 128 of [A-Za-z0-9._-], not starting with '.'\n".to_vec(),
        ),
        (Method::Get, key) => match std::fs::read(data_dir().join(key)) {
            Ok(value) => (200, value),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                (404, format!("no key {key}\n").into_bytes())
            }
            Err(error) => (500, format!("cannot read {key}: {error}\n").into_bytes()),
        },
        (Method::Put, key) => match read_body(request) {
            Ok(value) => match store(key, &value) {
                Ok(()) => (201, format!("stored {key}\n").into_bytes()),
                Err(error) => (500, format!("cannot store {key}: {error}\n").into_bytes()),
            },
            Err(error) => (413, format!("{error}\n").into_bytes()),
        },
        (Method::Delete, key) => match std::fs::remove_file(data_dir().join(key)) {
            Ok(()) => (200, format!("deleted {key}\n").into_bytes()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                (404, format!("no key {key}\n").into_bytes())
            }
            Err(error) => (500, format!("cannot delete {key}: {error}\n").into_bytes()),
        },
        _ => (405, b"GET, PUT or DELETE\n".to_vec()),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for KeyValue {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split_once('?').map_or(path.as_str(), |(p, _)| p).to_owned();
        let (status, body) = answer(request.method(), &path, request);
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(outgoing) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(out) = outgoing.write() {
            for chunk in body.chunks(4096) {
                let _ = out.blocking_write_and_flush(chunk);
            }
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
