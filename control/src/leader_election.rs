//! Leader election on a coordination.k8s.io Lease, as client-go's `leaderelection` does it for
//! kube-scheduler and kube-controller-manager: candidates try every retry period to take the Lease; it is
//! theirs to take when it has no holder or its holder has not renewed it within its duration, as seen on the
//! candidate's own clock (a record unchanged since it was first observed, so clocks need not agree). The
//! leader renews every retry period and stops acting at once when it has not renewed within the renew
//! deadline (shorter than the duration, so its successor never overlaps it) or sees another holder. Every
//! write is a compare-and-swap on the Lease's resourceVersion, so two candidates never both take it.
//!
//! kube-lease-manager (the maintained crate for Leases) times its renewals by a grace period before expiry
//! and has no renew deadline or retry period; client-go's contract needs both, hence this module.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use std::future::Future;
use std::time::{Duration, Instant};

/// A Lease and how candidates treat it.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The Lease's namespace (Kubernetes: `kube-system`).
    pub namespace: String,
    /// The Lease's name (`kube-scheduler`, `kube-controller-manager`).
    pub name: String,
    /// This candidate's identity, unique among candidates (Kubernetes: `HOSTNAME_UUID`).
    pub identity: String,
    /// How long a holder's renewal keeps others out (Kubernetes: 15 s).
    pub lease_duration: Duration,
    /// How long a leader keeps acting without a successful renewal (Kubernetes: 10 s).
    pub renew_deadline: Duration,
    /// How often candidates try and leaders renew (Kubernetes: 2 s).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// Kubernetes' defaults for the Lease `kube-system/NAME`, with a fresh identity on this host.
    pub fn new(name: &str, host: &str) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: format!("{host}_{}", uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate last saw of the Lease, and when on its own clock it first saw it so.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

/// What to do with the Lease as it stands.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Another candidate holds it and renewed it within its duration.
    Wait,
    /// Write this candidate's record over it: `taking` when it was not ours (one more transition).
    Write { taking: bool },
}

/// The decision of one try, from the Lease's spec as read and what this candidate observed before.
fn decide(
    spec: &LeaseSpec,
    identity: &str,
    observed: &mut Observed,
    now: Instant,
    default_duration: Duration,
) -> Step {
    let record = (spec.holder_identity.clone(), spec.renew_time.clone());
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.since = Some(now);
    }
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    match holder {
        Some(holder) if holder == identity => Step::Write { taking: false },
        None => Step::Write { taking: true },
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            let since = observed.since.unwrap_or(now);
            if now.duration_since(since) < duration {
                Step::Wait
            } else {
                Step::Write { taking: true }
            }
        }
    }
}

/// One candidate of one election.
struct Candidate {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Observed,
}

impl Candidate {
    fn spec(&self, previous: Option<&LeaseSpec>, taking: bool) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: i32::try_from(self.config.lease_duration.as_secs()).ok(),
            acquire_time: match previous {
                Some(p) if !taking => p.acquire_time.clone(),
                _ => Some(now.clone()),
            },
            renew_time: Some(now),
            lease_transitions: Some(if taking && previous.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// Takes or renews the Lease if it is this candidate's to have; whether it holds it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let lease = match self.api.get_opt(&self.config.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, true)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let step = decide(
            &spec,
            &self.config.identity,
            &mut self.observed,
            Instant::now(),
            self.config.lease_duration,
        );
        let Step::Write { taking } = step else {
            return Ok(false);
        };
        let mut written = lease;
        written.spec = Some(self.spec(Some(&spec), taking));
        // The resourceVersion read makes the replace a compare-and-swap.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &written)
            .await
        {
            Ok(_) => {
                if taking {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "took the lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Runs `work` (a component that runs until the process ends) only while this candidate leads: it waits for
/// the Lease, runs `work`, and stops it at once when leadership is lost, then stands again. Returns when
/// `stop` completes, having released the Lease if it held it (client-go's ReleaseOnCancel), so a standby
/// takes over at its next try rather than after the lease duration.
pub async fn run_while_leading<F, Fut>(
    client: kube::Client,
    config: ElectionConfig,
    work: F,
    stop: impl Future<Output = ()>,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut candidate = Candidate {
        api: Api::namespaced(client, &config.namespace),
        config,
        observed: Observed::default(),
    };
    let retry = candidate.config.retry_period;
    tokio::pin!(stop);
    loop {
        loop {
            match candidate.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(lease = %candidate.config.name, %error, "cannot read the lease")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(jittered(retry)) => {}
                () = &mut stop => return,
            }
        }
        tracing::info!(lease = %candidate.config.name, identity = %candidate.config.identity, "leading");
        let mut leading = tokio::spawn(work());
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = &mut leading => break,
                () = tokio::time::sleep(retry) => {}
                () = &mut stop => {
                    leading.abort();
                    candidate.release().await;
                    return;
                }
            }
            match candidate.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                // Another holder: it is theirs.
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(lease = %candidate.config.name, %error, "cannot renew the lease");
                    if renewed.elapsed() >= candidate.config.renew_deadline {
                        break;
                    }
                }
            }
        }
        leading.abort();
        tracing::warn!(lease = %candidate.config.name, identity = %candidate.config.identity, "stopped leading");
    }
}

impl Candidate {
    /// Gives the Lease up if this candidate holds it: no holder, a one-second duration (client-go's release).
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        let now = MicroTime(jiff::Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..spec
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "released the lease"),
            Err(error) => {
                tracing::warn!(lease = %self.config.name, %error, "cannot release the lease")
            }
        }
    }
}

/// The retry period with up to 20% more, so candidates do not try in lockstep (client-go's jitter 1.2).
fn jittered(period: Duration) -> Duration {
    let fraction = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
    period.mul_f64(1.0 + 0.2 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                jiff::Timestamp::from_second(renewed).expect("a time"),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_held_lease_is_taken_only_after_its_duration_on_the_candidates_clock() {
        let mut observed = Observed::default();
        let start = Instant::now();
        let duration = Duration::from_secs(15);
        let held = spec(Some("a"), 100);
        assert_eq!(
            decide(&held, "b", &mut observed, start, duration),
            Step::Wait
        );
        let later = start + Duration::from_secs(14);
        assert_eq!(
            decide(&held, "b", &mut observed, later, duration),
            Step::Wait
        );
        // A renewal seen restarts the count, whatever time the holder's clock wrote.
        let renewed = spec(Some("a"), 50);
        assert_eq!(
            decide(&renewed, "b", &mut observed, later, duration),
            Step::Wait
        );
        let expired = later + Duration::from_secs(15);
        assert_eq!(
            decide(&renewed, "b", &mut observed, expired, duration),
            Step::Write { taking: true }
        );
    }

    #[test]
    fn the_holder_renews_and_a_free_lease_is_taken_at_once() {
        let mut observed = Observed::default();
        let now = Instant::now();
        let duration = Duration::from_secs(15);
        assert_eq!(
            decide(&spec(Some("a"), 1), "a", &mut observed, now, duration),
            Step::Write { taking: false }
        );
        assert_eq!(
            decide(&spec(None, 1), "b", &mut observed, now, duration),
            Step::Write { taking: true }
        );
        assert_eq!(
            decide(&spec(Some(""), 1), "b", &mut observed, now, duration),
            Step::Write { taking: true }
        );
    }
}
