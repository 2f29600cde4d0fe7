//! Liveness, readiness and startup probes (httpGet and tcpSocket), run against the pod's address with
//! Kubernetes' timing: initialDelaySeconds, periodSeconds (10), timeoutSeconds (1), successThreshold (1),
//! failureThreshold (3). Each probe's verdicts go to the container's worker as events.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the probes tell the container's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe passed: liveness and readiness probes begin.
    Started,
    /// The readiness probe's verdict changed: ready, or not with the failed check's reason.
    Readiness(Result<(), String>),
    /// The liveness (or startup) probe failed failureThreshold times: the container must be restarted.
    Failed(String),
}

/// The port a probe names: a number, or the name of one of the container's ports.
fn port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

/// Runs a probe once; the error says why it failed.
pub async fn check(probe: &Probe, ip: IpAddr, ports: &[ContainerPort]) -> Result<(), String> {
    let timeout = Duration::from_secs(
        probe
            .timeout_seconds
            .unwrap_or(1)
            .max(1)
            .unsigned_abs()
            .into(),
    );
    if let Some(http) = &probe.http_get {
        let port = port(&http.port, ports)?;
        let scheme = http
            .scheme
            .as_deref()
            .unwrap_or("HTTP")
            .to_ascii_lowercase();
        let host = http.host.clone().unwrap_or_else(|| ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let url = format!(
            "{scheme}://{}/{}",
            SocketAddr::new(host.parse().unwrap_or(ip), port),
            path.trim_start_matches('/')
        );
        // The kubelet does not check the certificate of an HTTPS probe's target.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.get(&url);
        for header in http.http_headers.iter().flatten() {
            request = request.header(&header.name, &header.value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let code = response.status().as_u16();
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(&tcp.port, ports)?;
        let host: IpAddr = tcp
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(ip);
        let address = SocketAddr::new(host, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {address}: {e}")),
            Err(_) => Err(format!("dial tcp {address}: i/o timeout")),
        };
    }
    Err("only httpGet and tcpSocket probes are supported".into())
}

/// Counts consecutive results against a probe's thresholds.
#[derive(Debug, Default)]
pub struct Thresholds {
    successes: i32,
    failures: i32,
}

impl Thresholds {
    /// Takes one result; returns the new verdict when a threshold is crossed.
    pub fn record(&mut self, probe: &Probe, passed: bool) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.successes += 1;
            (self.successes == probe.success_threshold.unwrap_or(1).max(1)).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures == probe.failure_threshold.unwrap_or(3).max(1)).then_some(false)
        }
    }
}

fn period(probe: &Probe) -> Duration {
    Duration::from_secs(
        probe
            .period_seconds
            .unwrap_or(10)
            .max(1)
            .unsigned_abs()
            .into(),
    )
}

fn initial_delay(probe: &Probe) -> Duration {
    Duration::from_secs(
        probe
            .initial_delay_seconds
            .unwrap_or(0)
            .max(0)
            .unsigned_abs()
            .into(),
    )
}

/// Probes a running container until the receiver goes away: the startup probe first, then liveness and
/// readiness side by side.
pub async fn run(container: Container, ip: IpAddr, events: mpsc::Sender<ProbeEvent>) {
    let ports = container.ports.clone().unwrap_or_default();
    if let Some(startup) = &container.startup_probe {
        tokio::time::sleep(initial_delay(startup)).await;
        let mut counts = Thresholds::default();
        loop {
            let result = check(startup, ip, &ports).await;
            match counts.record(startup, result.is_ok()) {
                Some(true) => break,
                Some(false) => {
                    let reason = result.err().unwrap_or_default();
                    let _ = events
                        .send(ProbeEvent::Failed(format!(
                            "Startup probe failed: {reason}"
                        )))
                        .await;
                    return;
                }
                None => {}
            }
            tokio::time::sleep(period(startup)).await;
        }
        if events.send(ProbeEvent::Started).await.is_err() {
            return;
        }
    }
    let liveness = container.liveness_probe.clone().map(|probe| {
        let (events, ports) = (events.clone(), ports.clone());
        tokio::spawn(async move {
            tokio::time::sleep(initial_delay(&probe)).await;
            let mut counts = Thresholds::default();
            loop {
                let result = check(&probe, ip, &ports).await;
                if counts.record(&probe, result.is_ok()) == Some(false) {
                    let reason = result.err().unwrap_or_default();
                    let _ = events
                        .send(ProbeEvent::Failed(format!(
                            "Liveness probe failed: {reason}"
                        )))
                        .await;
                    return;
                }
                tokio::time::sleep(period(&probe)).await;
            }
        })
    });
    if let Some(probe) = container.readiness_probe.clone() {
        tokio::time::sleep(initial_delay(&probe)).await;
        let mut counts = Thresholds::default();
        loop {
            let result = check(&probe, ip, &ports).await;
            if let Some(verdict) = counts.record(&probe, result.is_ok()) {
                let readiness = match (verdict, result) {
                    (true, _) => Ok(()),
                    (false, result) => Err(format!(
                        "Readiness probe failed: {}",
                        result.err().unwrap_or_default()
                    )),
                };
                if events.send(ProbeEvent::Readiness(readiness)).await.is_err() {
                    break;
                }
            }
            tokio::time::sleep(period(&probe)).await;
        }
    }
    if let Some(task) = liveness {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_change_only_when_a_threshold_is_crossed() {
        let probe = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        };
        let mut counts = Thresholds::default();
        assert_eq!(counts.record(&probe, true), None);
        assert_eq!(counts.record(&probe, true), Some(true));
        assert_eq!(counts.record(&probe, true), None, "already ready");
        assert_eq!(counts.record(&probe, false), None);
        assert_eq!(counts.record(&probe, false), None);
        assert_eq!(counts.record(&probe, false), Some(false));
    }

    #[test]
    fn named_ports_resolve_to_the_containers_port() {
        let ports = vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }];
        assert_eq!(port(&IntOrString::String("http".into()), &ports), Ok(8080));
        assert_eq!(port(&IntOrString::Int(9000), &ports), Ok(9000));
        assert!(port(&IntOrString::String("admin".into()), &ports).is_err());
    }
}
