//! Headless Chromium driven through chromedriver (WebDriver), for tests and benchmarks of the dashboard: each
//! call blocks until the browser answered, as the rest of the tests' helpers do.

#![allow(dead_code)]

use fantoccini::{ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a wait for the page gives up after.
const PATIENCE: Duration = Duration::from_secs(40);

/// A Chromium of its own (fresh profile), closed and its driver killed when dropped.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn installed(env: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_owned()));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-test-tools (Debian's chromium and chromium-driver)",
        path.display()
    );
    path
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium that accepts the test cluster's own
    /// CA (its certificate is not in the browser's trust store).
    pub fn start() -> Self {
        let chromium = installed("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = installed("CHROMEDRIVER", "/usr/bin/chromedriver");
        let profile = tempfile::tempdir().expect("a profile directory");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let port = crate::common::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--ignore-certificate-errors", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = runtime.block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&format!("http://127.0.0.1:{port}")),
            );
            match attempt {
                Ok(client) => break client,
                Err(error) if Instant::now() > deadline => {
                    panic!("chromium did not start through chromedriver: {error}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        Self {
            runtime,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("an open browser")
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The page's current URL.
    pub fn url(&self) -> String {
        self.runtime
            .block_on(self.client().current_url())
            .expect("the current URL")
            .to_string()
    }

    /// How many elements match a CSS selector now.
    pub fn count(&self, css: &str) -> usize {
        self.runtime
            .block_on(self.client().find_all(Locator::Css(css)))
            .map_or(0, |found| found.len())
    }

    /// Waits until `check` holds of the number of elements that match a CSS selector; fails with what the
    /// page shows.
    pub fn wait_for_count(&self, css: &str, what: &str, check: impl Fn(usize) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut last = 0;
        while Instant::now() < deadline {
            last = self.count(css);
            if check(last) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the page never had {what} ({css} matched {last}); it shows:\n{}",
            self.text("body")
        );
    }

    /// Waits until an element matches a CSS selector.
    pub fn wait_for(&self, css: &str) {
        self.wait_for_count(css, css, |n| n > 0);
    }

    /// The text of the first element a CSS selector matches (empty when none does).
    pub fn text(&self, css: &str) -> String {
        self.runtime.block_on(async {
            match self.client().find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        })
    }

    /// Waits for an element and clicks it.
    pub fn click(&self, css: &str) {
        self.wait_for(css);
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Waits for an input, empties it and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        self.wait_for(css);
        self.runtime
            .block_on(async {
                let input = self.client().find(Locator::Css(css)).await?;
                input.clear().await?;
                input.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Types keys into the page itself (keyboard shortcuts), with nothing focused.
    pub fn press(&self, keys: &str) {
        self.runtime
            .block_on(async {
                self.client()
                    .execute(
                        "document.activeElement && document.activeElement.blur()",
                        vec![],
                    )
                    .await?;
                self.client()
                    .find(Locator::Css("body"))
                    .await?
                    .send_keys(keys)
                    .await
            })
            .unwrap_or_else(|e| panic!("cannot press {keys:?}: {e}"));
    }

    /// Runs a script in the page; what it returns.
    pub fn script(&self, js: &str) -> serde_json::Value {
        self.runtime
            .block_on(self.client().execute(js, vec![]))
            .unwrap_or_else(|e| panic!("cannot run {js:?}: {e}"))
    }

    /// Waits until a script run in the page returns true.
    pub fn wait_for_script(&self, js: &str, what: &str) {
        self.wait_for_count("body", what, |_| {
            self.script(js) == serde_json::Value::Bool(true)
        });
    }

    /// Saves a PNG of the page under the tests' target directory; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot written");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
