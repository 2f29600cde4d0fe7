//! The metrics of the control-plane components that run in the apiserver's process (the scheduler), served with
//! the apiserver's own at its `/metrics`: one process, one endpoint (Kubernetes' components each register in
//! their process's registry the same way).

use prometheus_client::registry::{Metric, Registry};
use std::sync::{LazyLock, Mutex};

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// Registers a metric of a component of this process.
pub fn register(name: &str, help: &str, metric: impl Metric) {
    if let Ok(mut registry) = REGISTRY.lock() {
        registry.register(name, help, metric);
    }
}

/// Writes every component's metrics in the text exposition, without the final `# EOF`.
pub fn encode(text: &mut String) {
    if let Ok(registry) = REGISTRY.lock() {
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(text, &registry);
    }
}

/// `GET /metrics` of a component running on its own (`wasmkube scheduler`, `controller-manager`): its metrics
/// in the text exposition.
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            let mut text = String::new();
            encode(&mut text);
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::text::encode_eof(&mut text);
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
        }),
    )
}
