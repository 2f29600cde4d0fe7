//! `wasmkube dashboard`: a one-time link that logs the kubeconfig's user in to the cluster's web dashboard.

use crate::cli::{self, ClientArgs};
use anyhow::Context;

/// What the apiserver answers to `POST /ui/login-codes`.
#[derive(serde::Deserialize)]
struct LoginCode {
    code: String,
    user: String,
    expiration: String,
}

/// Prints a login link to the dashboard (on stdout) and whom it logs in until when (on stderr).
pub async fn dashboard(args: &ClientArgs) -> anyhow::Result<()> {
    let config = cli::config(args).await?;
    let base = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let client = kube::Client::try_from(config)?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri("/ui/login-codes")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(b"{}".to_vec())?;
    let login: LoginCode = client
        .request(request)
        .await
        .map_err(cli::api_error)
        .context("cannot get a dashboard login code")?;
    println!("{base}/ui/#code={}", login.code);
    eprintln!(
        "The link logs in as {} once, until {} (the page is served with the cluster's own CA).",
        login.user, login.expiration
    );
    Ok(())
}
