//! The HTTP hello app: a wasi:http component that answers `GET /` with the name of the pod serving it (from
//! `POD_NAME`, set by a fieldRef in the manifest). `/healthz` answers `ok` for probes; `/panic` traps, to show
//! that one failing request costs only that request.

use std::io::Write as _;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, text) = match path.split('?').next().unwrap_or_default() {
            "/healthz" => (200, "ok\n".to_owned()),
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
