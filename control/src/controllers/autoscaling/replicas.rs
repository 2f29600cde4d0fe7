//! How many replicas a resource metric asks for, as kube-controller-manager's replica calculator computes it:
//! the pods' use against the target (utilization of their requests, or an average value), a 10% tolerance,
//! pods without metrics counted at 100% on a scale-down and 0% on a scale-up, and pods not ready yet (for CPU,
//! still starting) counted at 0% on a scale-up and left out otherwise.

use std::time::Duration;

/// The tolerance within which the ratio of use to target changes nothing (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// How long after its start a pod's CPU readings may be those of its start (`--horizontal-pod-autoscaler-cpu-initialization-period`).
pub const CPU_INITIALIZATION: Duration = Duration::from_secs(300);
/// How long after its start a pod that never was ready counts as not ready yet
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`).
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// One pod the target's selector picks, as the calculation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    /// Its name.
    pub name: String,
    /// Being deleted, or Failed: left out altogether.
    pub gone: bool,
    /// Pending: not ready.
    pub pending: bool,
    /// Its Ready condition: whether it is true and when it last changed (none: no condition).
    pub ready: Option<(bool, jiff::Timestamp)>,
    /// When it started.
    pub started: Option<jiff::Timestamp>,
    /// The sum of its containers' requests of the resource, in milli-units (none: a container has none).
    pub request: Option<i64>,
    /// Its use in milli-units, when it has metrics: the value, and the end and length of their window.
    pub usage: Option<(i64, jiff::Timestamp, Duration)>,
}

/// What a metric is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// A percentage of the pods' requests.
    Utilization(i32),
    /// An average per pod, in milli-units.
    AverageValue(i64),
}

/// A metric's recommendation and what was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The replicas the metric asks for.
    pub replicas: i32,
    /// The measured utilization in percent of requests (for a utilization target).
    pub utilization: Option<i32>,
    /// The measured average per pod, in milli-units.
    pub average: i64,
}

/// Why no recommendation could be made (the HPA's ScalingActive=False reasons' messages).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalculationError {
    /// The selector picks no pods.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// No ready pod has metrics.
    #[error("did not receive metrics for any ready pods")]
    NoMetrics,
    /// A utilization target, and a pod without a request for the resource.
    #[error("missing request for {resource} in pod {pod}")]
    MissingRequest {
        /// The resource.
        resource: String,
        /// The pod.
        pod: String,
    },
}

/// How the pods divide: counted with their metrics, not ready yet, and without metrics.
struct Groups<'a> {
    ready: Vec<&'a PodSample>,
    unready: Vec<&'a PodSample>,
    missing: Vec<&'a PodSample>,
}

fn group(pods: &[PodSample], is_cpu: bool, now: jiff::Timestamp) -> Groups<'_> {
    let mut groups = Groups {
        ready: Vec::new(),
        unready: Vec::new(),
        missing: Vec::new(),
    };
    for pod in pods.iter().filter(|p| !p.gone) {
        if pod.pending {
            groups.unready.push(pod);
            continue;
        }
        let Some((_, measured_at, window)) = pod.usage else {
            groups.missing.push(pod);
            continue;
        };
        if is_cpu {
            let unready = match (pod.ready, pod.started) {
                (Some((ready, changed)), Some(started)) => {
                    if started + CPU_INITIALIZATION > now {
                        // Starting: a reading from before a whole window after it turned ready is its start's.
                        !ready || measured_at < changed + window
                    } else {
                        // Never ready since it started.
                        !ready && started + INITIAL_READINESS_DELAY > changed
                    }
                }
                _ => true,
            };
            if unready {
                groups.unready.push(pod);
                continue;
            }
        }
        groups.ready.push(pod);
    }
    groups
}

/// The ratio of use to target over (pod, use) pairs, with the utilization or average it measured.
fn ratio(
    uses: &[(&PodSample, i64)],
    target: Target,
    resource: &str,
) -> Result<(f64, Option<i32>, i64), CalculationError> {
    // In i128: a metric or a request may be any quantity a user wrote, and their sums must not wrap.
    let total: i128 = uses.iter().map(|(_, used)| i128::from(*used)).sum();
    let count = i128::try_from(uses.len().max(1)).unwrap_or(i128::MAX);
    let average = i64::try_from(total / count).unwrap_or(i64::MAX);
    match target {
        Target::Utilization(percent) => {
            let mut requested = 0i128;
            for (pod, _) in uses {
                let request = pod
                    .request
                    .ok_or_else(|| CalculationError::MissingRequest {
                        resource: resource.to_owned(),
                        pod: pod.name.clone(),
                    })?;
                requested += i128::from(request);
            }
            if requested == 0 {
                return Err(CalculationError::NoMetrics);
            }
            let utilization = i32::try_from(total * 100 / requested).unwrap_or(i32::MAX);
            Ok((
                f64::from(utilization) / f64::from(percent.max(1)),
                Some(utilization),
                average,
            ))
        }
        Target::AverageValue(value) => Ok((average as f64 / value.max(1) as f64, None, average)),
    }
}

fn ceil_replicas(value: f64) -> i32 {
    value.ceil().clamp(0.0, f64::from(i32::MAX)) as i32
}

/// The replicas a resource metric asks for, given the `current` replicas and the target's pods at `now`.
pub fn recommend(
    current: i32,
    pods: &[PodSample],
    resource: &str,
    target: Target,
    now: jiff::Timestamp,
) -> Result<Recommendation, CalculationError> {
    if pods.iter().all(|p| p.gone) {
        return Err(CalculationError::NoPods);
    }
    let groups = group(pods, resource == "cpu", now);
    let measured: Vec<(&PodSample, i64)> = groups
        .ready
        .iter()
        .filter_map(|p| p.usage.map(|(used, _, _)| (*p, used)))
        .collect();
    if measured.is_empty() {
        return Err(CalculationError::NoMetrics);
    }
    let (usage_ratio, utilization, average) = ratio(&measured, target, resource)?;
    let recommendation = |replicas| Recommendation {
        replicas,
        utilization,
        average,
    };
    let rebalance_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
    if !rebalance_unready && groups.missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(recommendation(current));
        }
        let ready = i32::try_from(groups.ready.len()).unwrap_or(i32::MAX);
        return Ok(recommendation(ceil_replicas(
            usage_ratio * f64::from(ready),
        )));
    }
    // Fill in the pods without readings: a scale-down counts them at their target, a scale-up at nothing.
    let mut filled = measured.clone();
    for pod in &groups.missing {
        let assumed = if usage_ratio < 1.0 {
            match target {
                Target::Utilization(_) => pod.request.unwrap_or(0),
                Target::AverageValue(value) => value,
            }
        } else {
            0
        };
        if usage_ratio != 1.0 {
            filled.push((pod, assumed));
        }
    }
    if rebalance_unready {
        filled.extend(groups.unready.iter().map(|pod| (*pod, 0)));
    }
    let (new_ratio, _, _) = ratio(&filled, target, resource)?;
    let flips = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= TOLERANCE || flips {
        return Ok(recommendation(current));
    }
    let counted = i32::try_from(filled.len()).unwrap_or(i32::MAX);
    let replicas = ceil_replicas(new_ratio * f64::from(counted));
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(recommendation(current));
    }
    Ok(recommendation(replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    /// A pod that started 10 minutes before `at(0)`, ready since, using `used` millicores of `request`.
    fn pod(name: &str, request: i64, used: Option<i64>) -> PodSample {
        PodSample {
            name: name.into(),
            gone: false,
            pending: false,
            ready: Some((true, at(-590))),
            started: Some(at(-600)),
            request: Some(request),
            usage: used.map(|u| (u, at(0), Duration::from_secs(5))),
        }
    }

    #[test]
    fn the_ratio_of_use_to_target_scales_the_ready_pods() {
        // 3 pods requesting 100m use 250m each: 250% against 50% is 5x, so 15 replicas.
        let pods: Vec<PodSample> = (0..3)
            .map(|i| pod(&format!("p{i}"), 100, Some(250)))
            .collect();
        let r = recommend(3, &pods, "cpu", Target::Utilization(50), at(0)).unwrap();
        assert_eq!((r.replicas, r.utilization, r.average), (15, Some(250), 250));
        // 53% against 50% is within the 10% tolerance: nothing changes.
        let pods: Vec<PodSample> = (0..3)
            .map(|i| pod(&format!("p{i}"), 100, Some(53)))
            .collect();
        assert_eq!(
            recommend(3, &pods, "cpu", Target::Utilization(50), at(0))
                .unwrap()
                .replicas,
            3
        );
        // 10% against 50%: ceil(0.2 x 3) = 1.
        let pods: Vec<PodSample> = (0..3)
            .map(|i| pod(&format!("p{i}"), 100, Some(10)))
            .collect();
        assert_eq!(
            recommend(3, &pods, "cpu", Target::Utilization(50), at(0))
                .unwrap()
                .replicas,
            1
        );
        // An average value target: 300m on average against 100m is 3 x 2 pods.
        let pods: Vec<PodSample> = (0..2)
            .map(|i| pod(&format!("p{i}"), 100, Some(300)))
            .collect();
        assert_eq!(
            recommend(2, &pods, "cpu", Target::AverageValue(100), at(0))
                .unwrap()
                .replicas,
            6
        );
    }

    #[test]
    fn a_pods_metric_averages_its_values_against_an_average_value() {
        // http_requests_per_second of 12, 9 and 15 against 5 per pod: an average of 12 is 2.4x, so
        // ceil(2.4 x 3) = 8. No requests are needed, and a pod not yet ready counts as 0 on the way up:
        // (12 + 9 + 15 + 0) / 4 = 9 is 1.8x of 4 pods, 8 again.
        let rates = [12_000, 9_000, 15_000];
        let mut pods: Vec<PodSample> = rates
            .iter()
            .enumerate()
            .map(|(i, used)| PodSample {
                request: None,
                ..pod(&format!("p{i}"), 0, Some(*used))
            })
            .collect();
        let metric = "http_requests_per_second";
        let r = recommend(3, &pods, metric, Target::AverageValue(5_000), at(0)).unwrap();
        assert_eq!((r.replicas, r.utilization, r.average), (8, None, 12_000));
        pods.push(PodSample {
            pending: true,
            ready: None,
            request: None,
            usage: None,
            ..pod("new", 0, None)
        });
        let r = recommend(4, &pods, metric, Target::AverageValue(5_000), at(0)).unwrap();
        assert_eq!(r.replicas, 8);
        // 4.8 per pod against 5 is within the tolerance; 1 per pod is ceil(0.2 x 3) = 1.
        let steady: Vec<PodSample> = (0..3)
            .map(|i| pod(&format!("q{i}"), 0, Some(4_800)))
            .collect();
        let r = recommend(3, &steady, metric, Target::AverageValue(5_000), at(0)).unwrap();
        assert_eq!(r.replicas, 3);
        let idle: Vec<PodSample> = (0..3)
            .map(|i| pod(&format!("q{i}"), 0, Some(1_000)))
            .collect();
        let r = recommend(3, &idle, metric, Target::AverageValue(5_000), at(0)).unwrap();
        assert_eq!(r.replicas, 1);
    }

    #[test]
    fn pods_without_metrics_hold_back_the_change() {
        // 2 pods at 100% of a 50% target and one without metrics. Scaling up counts it at 0%: 200/300 = 66% is
        // 1.33x over 3 pods, 4 replicas.
        let mut pods = vec![
            pod("a", 100, Some(100)),
            pod("b", 100, Some(100)),
            pod("c", 100, None),
        ];
        assert_eq!(
            recommend(3, &pods, "cpu", Target::Utilization(50), at(0))
                .unwrap()
                .replicas,
            4
        );
        // Scaling down counts it at 100%: (20 + 20 + 100) / 300 = 46%, within tolerance of 50%: stay at 3.
        pods[0].usage = Some((20, at(0), Duration::from_secs(5)));
        pods[1].usage = Some((20, at(0), Duration::from_secs(5)));
        assert_eq!(
            recommend(3, &pods, "cpu", Target::Utilization(50), at(0))
                .unwrap()
                .replicas,
            3
        );
    }

    #[test]
    fn starting_pods_count_as_idle_on_a_scale_up_and_not_at_all_otherwise() {
        // One pod ready for a minute uses 200% of a 100% target; one turned ready 2 s before its reading (a 5 s
        // window): its reading is its start's, so it counts at 0% on the way up: 200/200 = 1x: stay at 2.
        let mut starting = pod("new", 100, Some(500));
        starting.started = Some(at(-60));
        starting.ready = Some((true, at(-2)));
        let pods = vec![pod("old", 100, Some(200)), starting];
        assert_eq!(
            recommend(2, &pods, "cpu", Target::Utilization(100), at(0))
                .unwrap()
                .replicas,
            2
        );
        // For memory the same pod is counted: (200 + 500) / 200 = 3.5x of 2 pods: 7.
        assert_eq!(
            recommend(2, &pods, "memory", Target::Utilization(100), at(0))
                .unwrap()
                .replicas,
            7
        );
    }

    #[test]
    fn quantities_as_large_as_users_write_them_do_not_overflow() {
        let pods: Vec<PodSample> = (0..3)
            .map(|i| pod(&format!("p{i}"), i64::MAX / 2, Some(i64::MAX / 2)))
            .collect();
        let r = recommend(3, &pods, "memory", Target::Utilization(50), at(0)).unwrap();
        assert!(r.replicas >= 3, "{r:?}");
        let r = recommend(3, &pods, "memory", Target::AverageValue(1), at(0)).unwrap();
        assert_eq!(r.replicas, i32::MAX);
    }

    #[test]
    fn what_cannot_be_computed_says_why() {
        let gone = PodSample {
            gone: true,
            ..pod("x", 100, Some(1))
        };
        assert_eq!(
            recommend(1, &[gone], "cpu", Target::Utilization(50), at(0)),
            Err(CalculationError::NoPods)
        );
        assert_eq!(
            recommend(
                1,
                &[pod("x", 100, None)],
                "cpu",
                Target::Utilization(50),
                at(0)
            ),
            Err(CalculationError::NoMetrics)
        );
        let no_request = PodSample {
            request: None,
            ..pod("x", 100, Some(5))
        };
        assert_eq!(
            recommend(1, &[no_request], "cpu", Target::Utilization(50), at(0))
                .unwrap_err()
                .to_string(),
            "missing request for cpu in pod x"
        );
    }
}
