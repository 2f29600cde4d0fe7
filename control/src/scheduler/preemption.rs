//! DefaultPreemption: when a pod fits no node, find the node where deleting pods of lower priority makes room
//! for it, and the fewest, least important such pods, as kube-scheduler's preemption does. Pure: the caller
//! nominates the node in the pod's status and deletes the victims.

use super::cache::{Cache, NodeInfo, Placed};
use super::framework::{
    ClusterFilters, FitError, Incoming, Rejection, fits_resources, preemption_message,
};
use super::plugins::Reason;
use crate::api::selector::LabelSelector;
use std::collections::BTreeSet;

/// What preemption needs of a PodDisruptionBudget: which pods it covers and how many may still go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Its namespace.
    pub namespace: String,
    /// Which pods it covers; an absent or empty selector covers none.
    pub selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub allowed: i32,
    /// `status.disruptedPods`: pods already counted as going.
    pub disrupted: BTreeSet<String>,
}

/// Placed pods with their uids.
type Pods<'a> = Vec<(&'a str, &'a Placed)>;

/// Splits pods into those whose deletion would break a budget and the others, spending each budget's allowance
/// in order (kube-scheduler's filterPodsWithPDBViolation).
fn split_by_budgets<'a>(pods: Pods<'a>, budgets: &[Budget]) -> (Pods<'a>, Pods<'a>) {
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
    pods.into_iter().partition(|(_, pod)| {
        let mut violated = false;
        for (budget, left) in budgets.iter().zip(allowed.iter_mut()) {
            let covers = budget.namespace == pod.labels.namespace
                && !pod.labels.labels.is_empty()
                && budget
                    .selector
                    .as_ref()
                    .is_some_and(|s| !s.0.is_empty() && s.matches(&pod.labels.labels));
            if !covers || budget.disrupted.contains(&pod.name) {
                continue;
            }
            *left -= 1;
            violated |= *left < 0;
        }
        violated
    })
}

/// A pod to delete to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// Its uid.
    pub uid: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: i32,
    /// Already being deleted (no need to ask again).
    pub terminating: bool,
}

/// The node to nominate and the pods to delete there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    /// The node the pod will take once the victims are gone.
    pub node: String,
    /// The pods to delete, most important first.
    pub victims: Vec<Victim>,
    /// How many of them a disruption budget does not allow to go.
    pub budget_violations: usize,
}

impl Preemption {
    /// How the candidates compare, the best least (kube-scheduler's pickOneNodeForPreemption): the fewest
    /// budget violations, the lowest highest victim priority, the lowest sum of priorities, the fewest victims,
    /// then the node's name.
    fn rank(&self) -> (usize, i32, i64, usize, &str) {
        let highest = self
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        // Shifted so that negative priorities still add up to less than none at all.
        let sum = self
            .victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum();
        (
            self.budget_violations,
            highest,
            sum,
            self.victims.len(),
            &self.node,
        )
    }
}

/// Whether the pod fits a node as preemption changes it: its resources and host ports, its spreading and its
/// inter-pod affinity (the filters whose answer depends on the node's pods).
fn fits(
    incoming: &Incoming,
    cluster: &ClusterFilters,
    room: &NodeInfo,
    reserved: super::plugins::Resources,
) -> Result<(), Rejection> {
    fits_resources(&incoming.placed, room, reserved)?;
    cluster.check(room)
}

/// The victims on one node: the pods of lower priority whose removal lets the pod fit there, reprieving the
/// most important first (those a disruption budget protects before the others) as long as the pod still fits
/// (kube-scheduler's SelectVictimsOnNode, with the spreading and affinity counts updated as pods go and come).
fn victims_on(
    cache: &Cache,
    incoming: &Incoming,
    cluster: &ClusterFilters,
    name: &str,
    node: &NodeInfo,
    budgets: &[Budget],
) -> Result<Preemption, Reason> {
    let priority = incoming.placed.priority;
    // Most pods share one priority: a node without lower ones is passed over without looking at its pods.
    if node
        .lowest_priority()
        .is_none_or(|lowest| lowest >= priority)
    {
        return Err("No preemption victims found for incoming pod".into());
    }
    let mut lower: Pods = cache
        .pods_on(node)
        .filter(|(_, p)| p.priority < priority)
        .collect();
    if lower.is_empty() {
        return Err("No preemption victims found for incoming pod".into());
    }
    let reserved = cache.nominated_ahead_of(&incoming.uid, &incoming.placed, name);
    let mut room = node.clone();
    let mut state = cluster.clone();
    for (uid, pod) in &lower {
        room.remove(uid, pod);
        state.update(incoming, cache, node, pod, -1);
    }
    fits(incoming, &state, &room, reserved).map_err(|r| r.reason)?;
    lower.sort_by(|(_, a), (_, b)| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    let (protected, unprotected) = split_by_budgets(lower, budgets);
    let mut victims = Vec::new();
    let mut budget_violations = 0;
    for (pods, protected) in [(protected, true), (unprotected, false)] {
        for (uid, pod) in pods {
            room.add(uid, pod);
            state.update(incoming, cache, node, pod, 1);
            if fits(incoming, &state, &room, reserved).is_err() {
                room.remove(uid, pod);
                state.update(incoming, cache, node, pod, -1);
                budget_violations += usize::from(protected);
                victims.push(Victim {
                    uid: uid.to_owned(),
                    namespace: pod.labels.namespace.clone(),
                    name: pod.name.clone(),
                    priority: pod.priority,
                    terminating: pod.terminating,
                });
            }
        }
    }
    Ok(Preemption {
        node: name.to_owned(),
        victims,
        budget_violations,
    })
}

/// Plans a preemption for a pod that fits nowhere, or says why none helps (Kubernetes' "preemption: ..."
/// message that follows the fit error's). Disruption budgets are respected where the choice allows, not
/// beyond: a pod that only fits by breaking one still preempts, as in Kubernetes.
pub fn plan(
    cache: &Cache,
    incoming: &Incoming,
    error: &FitError,
    budgets: &[Budget],
) -> Result<Preemption, String> {
    let spec = incoming.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let nominated = incoming
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .and_then(|name| cache.node(name));
    if let Some(node) = nominated {
        let waiting = cache
            .pods_on(node)
            .any(|(_, p)| p.terminating && p.priority < incoming.placed.priority);
        if waiting {
            return Err(
                "preemption: not eligible due to a terminating pod on the nominated node.".into(),
            );
        }
    }
    let cluster = ClusterFilters::new(incoming, cache);
    let mut reasons = Vec::new();
    let mut best: Option<Preemption> = None;
    for (name, rejection) in &error.rejections {
        let node = cache.node(name).filter(|_| rejection.resolvable);
        let Some(node) = node else {
            reasons.push("Preemption is not helpful for scheduling".to_owned());
            continue;
        };
        match victims_on(cache, incoming, &cluster, name, node, budgets) {
            Err(reason) => reasons.push(reason),
            Ok(candidate) => {
                if best.as_ref().is_none_or(|b| candidate.rank() < b.rank()) {
                    best = Some(candidate);
                }
            }
        }
    }
    best.ok_or_else(|| preemption_message(error.nodes, &reasons))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selector::LabelSelector;
    use crate::scheduler::fixtures::{cluster, node, pod};
    use crate::scheduler::framework::find_node;
    use crate::scheduler::plugins::volume_binding::VolumeFilter;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use serde_json::json;

    fn priority(value: i32) -> serde_json::Value {
        json!({"priority": value})
    }

    #[test]
    fn the_fewest_least_important_pods_make_room() {
        // n1: a (500m, priority 0) and b (500m, priority 10); n2: c (800m, priority 50). Both 1 cpu.
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({}))],
            vec![
                (pod("a", json!({}), "500m", priority(0)), "n1"),
                (pod("b", json!({}), "500m", priority(10)), "n1"),
                (pod("c", json!({}), "800m", priority(50)), "n2"),
            ],
        );
        let urgent = pod("urgent", json!({}), "400m", priority(100));
        let incoming = Incoming::new(&urgent, LabelSelector::default());
        let error = find_node(&mut cache, &incoming).unwrap_err();
        assert_eq!(
            error.message(),
            "0/2 nodes are available: 2 Insufficient cpu."
        );
        // On n1, b (more important) is reprieved: 500m + 400m fit; a goes. On n2, c (priority 50) would go.
        // n1 wins: its highest victim priority is 0.
        let plan = plan(&cache, &incoming, &error, &[]).unwrap();
        assert_eq!(plan.node, "n1");
        let victims: Vec<&str> = plan.victims.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(victims, ["a"]);
    }

    #[test]
    fn a_node_whose_victims_a_disruption_budget_protects_comes_last() {
        // n1 and n2 each run one 800m pod of priority 0; n1's is covered by a budget that allows no disruption.
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({}))],
            vec![
                (
                    pod("guarded", json!({"app": "db"}), "800m", priority(0)),
                    "n1",
                ),
                (
                    pod("free", json!({"app": "web"}), "800m", priority(0)),
                    "n2",
                ),
            ],
        );
        let urgent = pod("urgent", json!({}), "400m", priority(100));
        let incoming = Incoming::new(&urgent, LabelSelector::default());
        let error = find_node(&mut cache, &incoming).unwrap_err();
        let budget = Budget {
            namespace: "ns".into(),
            selector: Some(LabelSelector::parse("app=db").unwrap()),
            allowed: 0,
            disrupted: BTreeSet::new(),
        };
        let chosen = plan(&cache, &incoming, &error, std::slice::from_ref(&budget)).unwrap();
        assert_eq!((chosen.node.as_str(), chosen.budget_violations), ("n2", 0));
        let everywhere = Budget {
            selector: Some(LabelSelector::parse("app in (db,web)").unwrap()),
            ..budget
        };
        let forced = plan(&cache, &incoming, &error, &[everywhere]).unwrap();
        assert_eq!(
            (forced.node.as_str(), forced.budget_violations),
            ("n1", 1),
            "no choice left: a budget is broken, as in Kubernetes"
        );
    }

    #[test]
    fn preemption_says_why_it_cannot_help() {
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({"dedicated": "x"}))],
            vec![(pod("a", json!({}), "900m", priority(100)), "n1")],
        );
        let mut asks = priority(100);
        asks["nodeSelector"] = json!({"kubernetes.io/hostname": "n1"});
        let equal = pod("equal", json!({}), "500m", asks);
        let incoming = Incoming::new(&equal, LabelSelector::default());
        let error = find_node(&mut cache, &incoming).unwrap_err();
        assert_eq!(
            plan(&cache, &incoming, &error, &[]).unwrap_err(),
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
        let mut never = priority(1000);
        never["preemptionPolicy"] = json!("Never");
        let polite = pod("polite", json!({}), "950m", never);
        let incoming = Incoming::new(&polite, LabelSelector::default());
        let mut cache = cluster(
            vec![node("n1", json!({}))],
            vec![(pod("a", json!({}), "900m", priority(0)), "n1")],
        );
        let error = find_node(&mut cache, &incoming).unwrap_err();
        assert_eq!(
            plan(&cache, &incoming, &error, &[]).unwrap_err(),
            "preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    fn anti_affinity(app: &str) -> serde_json::Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}})
    }

    fn victims(plan: &Preemption) -> Vec<&str> {
        plan.victims.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn preemption_removes_the_pods_a_pods_anti_affinity_refuses() {
        // n1 runs web-low (priority 0), n2 web-high (priority 1000): the urgent pod (priority 100) refuses to
        // share a node with app=web. Only n1's pod may go.
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({}))],
            vec![
                (
                    pod("web-low", json!({"app": "web"}), "100m", priority(0)),
                    "n1",
                ),
                (
                    pod("web-high", json!({"app": "web"}), "100m", priority(1000)),
                    "n2",
                ),
            ],
        );
        let mut spec = priority(100);
        spec["affinity"] = anti_affinity("web");
        let urgent = pod("urgent", json!({"app": "api"}), "100m", spec);
        let incoming = Incoming::new(&urgent, LabelSelector::default());
        let error = find_node(&mut cache, &incoming).unwrap_err();
        assert_eq!(
            error.message(),
            "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
        );
        let plan = plan(&cache, &incoming, &error, &[]).unwrap();
        assert_eq!(
            (plan.node.as_str(), victims(&plan)),
            ("n1", vec!["web-low"])
        );
    }

    #[test]
    fn preemption_removes_a_pod_whose_anti_affinity_refuses_the_newcomer() {
        // n1's loner (priority 0) keeps app=api off its node; n2 is full with a pod of priority 1000.
        let mut loner = priority(0);
        loner["affinity"] = anti_affinity("api");
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({}))],
            vec![
                (pod("loner", json!({}), "100m", loner), "n1"),
                (pod("big", json!({}), "950m", priority(1000)), "n2"),
            ],
        );
        let urgent = pod("urgent", json!({"app": "api"}), "100m", priority(100));
        let incoming = Incoming::new(&urgent, LabelSelector::default());
        let error = find_node(&mut cache, &incoming).unwrap_err();
        assert_eq!(
            error.message(),
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't satisfy existing pods anti-affinity rules."
        );
        let plan = plan(&cache, &incoming, &error, &[]).unwrap();
        assert_eq!((plan.node.as_str(), victims(&plan)), ("n1", vec!["loner"]));
    }

    #[test]
    fn preemption_does_not_help_a_pod_whose_affinity_matches_nothing() {
        // The pod wants to be next to app=db, which runs nowhere: removing pods cannot make that true.
        let mut cache = cluster(
            vec![node("n1", json!({}))],
            vec![(pod("web", json!({"app": "web"}), "100m", priority(0)), "n1")],
        );
        let mut spec = priority(100);
        spec["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        let urgent = pod("urgent", json!({"app": "api"}), "100m", spec);
        let incoming = Incoming::new(&urgent, LabelSelector::default());
        let error = find_node(&mut cache, &incoming).unwrap_err();
        assert_eq!(
            plan(&cache, &incoming, &error, &[]).unwrap_err(),
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn preemption_takes_the_fewest_pods_that_bring_spreading_within_max_skew() {
        // maxSkew 2 over hostnames for app=web. n1 has web-1 and web-2 (priority 0): 2 + 1 − 0 = 3 > 2. n2 has
        // no web pod but is full with a pod of priority 1000. Without both web pods n1 is at 0; giving web-1
        // back makes 1 + 1 − 0 = 2 (fits), giving web-2 back too makes 3: web-2 goes, web-1 stays.
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({}))],
            vec![
                (
                    pod("web-1", json!({"app": "web"}), "100m", priority(0)),
                    "n1",
                ),
                (
                    pod("web-2", json!({"app": "web"}), "100m", priority(0)),
                    "n1",
                ),
                (pod("big", json!({}), "950m", priority(1000)), "n2"),
            ],
        );
        let mut spec = priority(100);
        spec["topologySpreadConstraints"] = json!([{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]);
        let urgent = pod("web-urgent", json!({"app": "web"}), "100m", spec);
        let incoming = Incoming::new(&urgent, LabelSelector::default());
        let error = find_node(&mut cache, &incoming).unwrap_err();
        assert_eq!(
            error.message(),
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match pod topology spread constraints."
        );
        let plan = plan(&cache, &incoming, &error, &[]).unwrap();
        assert_eq!((plan.node.as_str(), victims(&plan)), ("n1", vec!["web-2"]));
    }

    #[test]
    fn a_read_write_once_pod_claim_in_use_keeps_others_out_unless_they_preempt_its_user() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "solo", "namespace": "ns"},
            "spec": {"accessModes": ["ReadWriteOncePod"], "volumeName": "pv-1",
                     "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap();
        let storage = crate::scheduler::fixtures::Storage {
            claims: [("solo".to_owned(), std::sync::Arc::new(claim))].into(),
            volumes: vec![std::sync::Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "pv-1"}})).unwrap(),
            )],
            ..Default::default()
        };
        let with_claim = |value: i32| {
            let mut spec = priority(value);
            spec["volumes"] =
                json!([{"name": "d", "persistentVolumeClaim": {"claimName": "solo"}}]);
            spec
        };
        let mut cache = cluster(
            vec![node("n1", json!({}))],
            vec![(pod("holder", json!({}), "100m", with_claim(0)), "n1")],
        );
        for (name, value, preempts) in [("peer", 0, false), ("urgent", 100, true)] {
            let second = pod(name, json!({}), "100m", with_claim(value));
            let incoming = Incoming::new(&second, LabelSelector::default())
                .with_volumes(VolumeFilter::new(&second, &storage));
            let error = find_node(&mut cache, &incoming).unwrap_err();
            assert_eq!(
                error.message(),
                "0/1 nodes are available: 1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode."
            );
            match plan(&cache, &incoming, &error, &[]) {
                Ok(plan) => {
                    assert!(preempts);
                    assert_eq!(victims(&plan), ["holder"]);
                }
                Err(why) => {
                    assert!(!preempts);
                    assert_eq!(
                        why,
                        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
                    );
                }
            }
        }
    }

    #[test]
    fn room_kept_for_a_nominated_pod_is_not_taken_by_a_lesser_one() {
        let mut nominated = pod("urgent", json!({}), "600m", priority(100));
        nominated.status = serde_json::from_value(json!({"nominatedNodeName": "n1"})).unwrap();
        let mut cache = cluster(vec![node("n1", json!({}))], vec![]);
        cache.pod_changed(&crate::cache::Change::Applied(std::sync::Arc::new(
            nominated,
        )));
        let lesser = pod("lesser", json!({}), "600m", priority(0));
        let error = find_node(
            &mut cache,
            &Incoming::new(&lesser, LabelSelector::default()),
        )
        .unwrap_err();
        assert_eq!(
            error.message(),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
        let urgent_again = pod("urgent", json!({}), "600m", priority(100));
        assert_eq!(
            find_node(
                &mut cache,
                &Incoming::new(&urgent_again, LabelSelector::default())
            )
            .unwrap(),
            "n1",
            "its own reservation does not count against it"
        );
    }
}
