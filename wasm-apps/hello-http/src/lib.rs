//! The HTTP hello app: a wasi:http component that answers `GET /` with the name of the pod serving it (from
//! `POD_NAME`, set by a fieldRef in the manifest). `/healthz` answers `ok` for probes; `/panic` traps, to show
//! that one failing request costs only that request. `/fetch?to=HOST[:PORT]` makes an outgoing `GET /` to
//! HOST (a Service name works inside a pod) and answers with its status and body.

use std::io::{Read as _, Write as _};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let (status, text) = match route {
            "/healthz" => (200, "ok\n".to_owned()),
            "/fetch" => match query.strip_prefix("to=").map(fetch) {
                Some(Ok((code, body))) => (200, format!("fetched {code}: {body}")),
                Some(Err(error)) => (502, format!("fetch failed: {error}\n")),
                None => (400, "usage: /fetch?to=HOST[:PORT]\n".to_owned()),
            },
            "/panic" => panic!("asked to panic"),
            "/" => {
                let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "an unnamed pod".into());
                (200, format!("hello from {pod}\n"))
            }
            other => (404, format!("no page at {other}\n")),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut out) = body.write() {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// `GET http://AUTHORITY/`: the response's status and body.
fn fetch(authority: &str) -> Result<(u16, String), String> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad authority {authority:?}"))?;
    request.set_path_with_query(Some("/")).map_err(|()| "bad path")?;
    let body = request.body().map_err(|()| "no request body")?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken")?
        .map_err(|e| format!("{e:?}"))?;
    let incoming = response.consume().map_err(|()| "no response body")?;
    let mut text = String::new();
    {
        let mut stream = incoming.stream().map_err(|()| "no response stream")?;
        stream.read_to_string(&mut text).map_err(|e| e.to_string())?;
    }
    Ok((response.status(), text))
}
