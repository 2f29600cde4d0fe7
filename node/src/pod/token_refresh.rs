//! Keeps projected ServiceAccount tokens fresh, as the kubelet's token manager does: a mounted token is
//! requested again once 80% of its lifetime has passed (at most a day after the last) and its file replaced
//! at once (written beside it, then renamed over it), for as long as its pod runs.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The longest a token goes without being requested again.
const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long to wait after a failed request before trying again.
const RETRY: Duration = Duration::from_secs(10);

/// When a token of `lifetime` is requested again.
pub fn refresh_after(lifetime: Duration) -> Duration {
    (lifetime * 4 / 5).min(MAX_AGE)
}

/// Replaces `file` with `bytes` at once: a reader sees the old token or the new one, never a part.
pub fn replace(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".new");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, file)
}

/// The token files being kept fresh on this node.
#[derive(Clone, Default)]
pub struct Refreshes {
    files: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Refreshes {
    /// Keeps `file` fresh with what `fetch` answers, every [`refresh_after`] `lifetime`, until `stopped` turns
    /// true or the file's directory is gone; nothing when it is kept fresh already (a restarted container
    /// mounts the same file).
    pub fn keep<F, Fut>(
        &self,
        file: PathBuf,
        lifetime: Duration,
        mut stopped: watch::Receiver<bool>,
        fetch: F,
    ) where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send,
    {
        let Ok(mut files) = self.files.lock() else {
            return;
        };
        if !files.insert(file.clone()) {
            return;
        }
        let refreshes = self.files.clone();
        tokio::spawn(async move {
            let mut wait = refresh_after(lifetime);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                if !file.parent().is_some_and(Path::exists) {
                    break;
                }
                wait = match fetch()
                    .await
                    .and_then(|token| replace(&file, &token).map_err(|e| e.to_string()))
                {
                    Ok(()) => refresh_after(lifetime),
                    Err(error) => {
                        tracing::warn!(file = %file.display(), %error, "cannot refresh a mounted token");
                        RETRY
                    }
                };
            }
            if let Ok(mut files) = refreshes.lock() {
                files.remove(&file);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn tokens_are_refreshed_at_four_fifths_of_their_life_and_at_least_daily() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(refresh_after(Duration::from_secs(1 << 32)), MAX_AGE);
    }

    #[tokio::test]
    async fn a_token_file_is_replaced_until_its_pod_stops_and_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0").unwrap();
        let (stop, stopped) = watch::channel(false);
        let fetched = Arc::new(AtomicU32::new(0));
        let refreshes = Refreshes::default();
        for _ in 0..2 {
            let fetched = fetched.clone();
            refreshes.keep(
                file.clone(),
                Duration::from_millis(50),
                stopped.clone(),
                move || {
                    let n = fetched.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { Ok(n.to_string().into_bytes()) }
                },
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let written: u32 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
        assert!(written >= 3, "refreshed every 40 ms: {written}");
        // One refresher, not two: each value was written once, in order.
        assert_eq!(written, fetched.load(Ordering::SeqCst));
        stop.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after_stop = fetched.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(fetched.load(Ordering::SeqCst), after_stop);
        assert!(!dir.path().join("token.new").exists());
    }
}
