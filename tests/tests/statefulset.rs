//! The Kubernetes StatefulSet, started here: three local `quorumkv` processes launched
//! exactly as the kubelet would launch the pods of `deploy/k8s/base/statefulset.yaml` from
//! the image of `deploy/docker/Dockerfile` (see [`quorumkv_tests::kubelet`] for what is
//! taken as is and what is mapped), and checked to form one ring.
//!
//! A variable or argument the server does not accept therefore fails here before it can
//! fail in a cluster. The preStop hook has a test of its own (prestop.rs).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use quorumkv_tests::kubelet::{
    client_with_token, cluster_dns, container_port, fill_secret_volumes, pod_identities,
    probe_status, secret_keys, wait_for_probe, Image, Launch, RunningPod,
};
use serde_json::Value;

/// The client token this test puts in the pods' Secret volume.
const TEST_TOKEN: &str = "client-token-of-the-statefulset-test";

#[test]
fn three_nodes_started_as_the_statefulset_starts_them_form_one_ring() {
    let root = quorumkv_tests::workspace_root();
    let manifest: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/k8s/base/statefulset.yaml")).unwrap(),
    )
    .unwrap();
    let image =
        Image::parse(&std::fs::read_to_string(root.join("deploy/docker/Dockerfile")).unwrap());
    let spec = &manifest["spec"];
    let pod_spec = &spec["template"]["spec"];
    let containers = pod_spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container per pod");
    let container = &containers[0];
    assert_eq!(
        pod_spec["enableServiceLinks"], false,
        "Kubernetes would add QUORUMKV_SERVICE_HOST, QUORUMKV_PORT, ... for the Service \
         named quorumkv, in the server's own variable namespace"
    );

    let replicas = usize::try_from(spec["replicas"].as_u64().unwrap()).unwrap();
    let statefulset = manifest["metadata"]["name"].as_str().unwrap();
    let service = spec["serviceName"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pods = pod_identities(
        statefulset,
        replicas,
        container_port(container, "http"),
        dir.path(),
    );
    let dns = cluster_dns(&pods, service);

    // The kubelet fills each Secret volume with one file per key of the Secret; the keys
    // are those the overlay generates the Secret from, the values are this test's own.
    fill_secret_volumes(pod_spec, &pods, &secret_keys(&root), |key| match key {
        "auth-token" => TEST_TOKEN.to_string(),
        other => format!("{other}-value-of-the-statefulset-test"),
    });

    let mut running: Vec<RunningPod> = pods
        .iter()
        .map(|pod| {
            let launch = Launch::of(container, &image, pod, &dns);
            launch.spawn(pod)
        })
        .collect();

    // Clients authenticate with the token from the Secret; the probes need none.
    let http = client_with_token(TEST_TOKEN, Duration::from_secs(3));
    let probe_port = container_port(container, "http");
    for pod in &mut running {
        wait_for_probe(&http, container, "readinessProbe", pod, probe_port);
        for probe in ["livenessProbe", "startupProbe"] {
            assert_eq!(
                probe_status(&http, container, probe, pod, probe_port),
                Some(200),
                "{probe} of {}",
                pod.identity.name
            );
        }
    }

    // One ring: every node ready, every member up, the same members at the same addresses
    // and the same ownership everywhere.
    let want: BTreeMap<String, String> = pods
        .iter()
        .map(|p| (p.name.clone(), format!("{}:{probe_port}", p.ip)))
        .collect();
    let mut views = Vec::new();
    for pod in &running {
        let url = format!("http://{}:{probe_port}/v1/cluster", pod.identity.ip);
        let view: Value = http.get(url).send().unwrap().json().unwrap();
        assert_eq!(view["ready"], true, "{view}");
        assert_eq!(
            view["node"],
            pod.identity.name.as_str(),
            "the node id is the pod name"
        );
        let members = view["members"].as_array().unwrap();
        let seen: BTreeMap<String, String> = members
            .iter()
            .map(|m| {
                assert_eq!(m["status"], "up", "{view}");
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["addr"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(seen, want, "members as {} sees them", pod.identity.name);
        let ownership: BTreeMap<String, u64> = members
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["ownership"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ownership.values().sum::<u64>(),
            view["partitions"].as_u64().unwrap(),
            "every partition has an owner"
        );
        views.push(ownership);
    }
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "every node computes the same ring: {views:?}"
    );

    // A write through one pod is read back through another, at the default quorums.
    let put = http
        .put(format!(
            "http://{}:{probe_port}/v1/buckets/k8s/keys/hello",
            pods[0].ip
        ))
        .body("world")
        .send()
        .unwrap();
    assert_eq!(put.status(), 204);
    let get = http
        .get(format!(
            "http://{}:{probe_port}/v1/buckets/k8s/keys/hello",
            pods[2].ip
        ))
        .send()
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().unwrap(), "world");

    // The image's HEALTHCHECK, run inside the first pod.
    let healthcheck = image
        .healthcheck
        .as_ref()
        .expect("the image declares a HEALTHCHECK");
    let launch = Launch::of(container, &image, &pods[0], &dns);
    let status = launch
        .exec(healthcheck, &pods[0])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "HEALTHCHECK failed: {status}");

    // Stop as Kubernetes stops a pod, after its preStop hook (which prestop.rs tests: on a
    // restart it returns at once): SIGTERM, and each node drains and exits 0 within the
    // grace period.
    let grace = Duration::from_secs(pod_spec["terminationGracePeriodSeconds"].as_u64().unwrap())
        .min(Duration::from_secs(30));
    for pod in &mut running {
        pod.stop(grace);
    }
}
