//! Is this pod going away for good? The question `cluster leave --if-scaled-down` asks the
//! Kubernetes API before a StatefulSet pod stops.
//!
//! Kubernetes runs a pod's preStop hook before every stop: a scale-down, but also a rolling
//! upgrade, an eviction or a node drain. Leaving on each of them would copy the node's
//! whole data to the others and back again when the pod returns. A StatefulSet removes
//! the pods of the highest ordinals when it scales down, so a pod whose ordinal is at
//! least the StatefulSet's `spec.replicas` will not come back: only that one leaves.
//!
//! The lookup reads what Kubernetes mounts into every pod whose service account token is
//! automounted: the namespace, the token and the API server's CA in the service-account
//! directory, the API server's address in `KUBERNETES_SERVICE_HOST` and
//! `KUBERNETES_SERVICE_PORT`. It needs `get` on the StatefulSet (the Role in
//! deploy/k8s/base/role.yaml), nothing more.
//!
//! Any failure to ask is an error, never a guess: the caller then does not leave, and the
//! stop is a plain restart, which loses nothing. Leaving by mistake would move every
//! partition twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;

/// Where Kubernetes mounts a pod's service account credentials.
pub const DEFAULT_SERVICEACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long one request to the API server may take: the hook's whole budget is the pod's
/// grace period, and an API server that does not answer in this time will not help.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A StatefulSet pod, as its name tells: `<statefulset>-<ordinal>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    /// The pod's name.
    pub pod: String,
    /// The StatefulSet that owns it.
    pub statefulset: String,
    /// Its ordinal.
    pub ordinal: u32,
}

impl PodIdentity {
    /// Splits a StatefulSet pod name at its last `-`.
    pub fn parse(pod: &str) -> anyhow::Result<Self> {
        let Some((statefulset, ordinal)) = pod.rsplit_once('-') else {
            bail!("pod name {pod:?} is not <statefulset>-<ordinal>");
        };
        let ordinal: u32 = ordinal
            .parse()
            .ok()
            .filter(|_| !ordinal.starts_with('+'))
            .with_context(|| format!("pod name {pod:?}: {ordinal:?} is not an ordinal"))?;
        if statefulset.is_empty() {
            bail!("pod name {pod:?} names no StatefulSet before its ordinal");
        }
        Ok(Self {
            pod: pod.to_string(),
            statefulset: statefulset.to_string(),
            ordinal,
        })
    }
}

/// What the pod does on this stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The StatefulSet no longer counts this pod: it leaves and hands its data off.
    Leave,
    /// The pod comes back (a restart, an upgrade, a move): it keeps its data.
    Stay,
}

/// A pod leaves when the StatefulSet's replicas no longer include its ordinal.
pub fn decide(ordinal: u32, replicas: u64) -> Decision {
    if u64::from(ordinal) >= replicas {
        Decision::Leave
    } else {
        Decision::Stay
    }
}

/// Where and how to reach the Kubernetes API.
#[derive(Debug)]
pub struct ApiAccess {
    /// Base URL of the API server.
    pub base: String,
    /// The service-account directory (namespace, token, ca.crt).
    pub serviceaccount_dir: PathBuf,
}

impl ApiAccess {
    /// The API server `api` (a URL) or, when absent, the one of the pod's environment.
    pub fn new(api: Option<&str>, serviceaccount_dir: &Path) -> anyhow::Result<Self> {
        let base = match api {
            Some(api) => api.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").context(
                    "KUBERNETES_SERVICE_HOST is not set: not in a pod? (--kube-api names the \
                     API server)",
                )?;
                let port = std::env::var("KUBERNETES_SERVICE_PORT")
                    .context("KUBERNETES_SERVICE_PORT is not set")?;
                // An IPv6 address goes in brackets in a URL.
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        Ok(Self {
            base,
            serviceaccount_dir: serviceaccount_dir.to_path_buf(),
        })
    }

    /// The StatefulSet's `spec.replicas`, asked of the API server.
    pub fn replicas(&self, statefulset: &str) -> anyhow::Result<u64> {
        let namespace = self.read("namespace")?;
        let token = self.read("token")?;
        let url = format!(
            "{}/apis/apps/v1/namespaces/{namespace}/statefulsets/{statefulset}",
            self.base
        );
        let response = self
            .client()?
            .get(&url)
            .bearer_auth(token)
            .send()
            .with_context(|| format!("cannot reach the Kubernetes API at {}", self.base))?;
        let status = response.status();
        if status != StatusCode::OK {
            // The API's Status object says why (forbidden, not found); its message names
            // the resource, never the token.
            let body: Value = response.json().unwrap_or_default();
            bail!(
                "GET {url}: {status}: {}",
                body["message"].as_str().unwrap_or("no message")
            );
        }
        let body: Value = response
            .json()
            .with_context(|| format!("GET {url}: the answer is not JSON"))?;
        replicas_of(&body).with_context(|| format!("GET {url}"))
    }

    /// A file of the service-account directory, trimmed.
    fn read(&self, name: &str) -> anyhow::Result<String> {
        let path = self.serviceaccount_dir.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is the service account token mounted?)",
                path.display()
            )
        })?;
        Ok(text.trim().to_string())
    }

    /// A client that trusts only the API server's CA (`ca.crt`), as the CLI trusts only
    /// `--tls-ca`; a plain-http API (a proxy on loopback, a test) needs none.
    fn client(&self) -> anyhow::Result<Client> {
        let mut builder = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tls_built_in_root_certs(false);
        if self.base.starts_with("https://") {
            let path = self.serviceaccount_dir.join("ca.crt");
            let pem = crate::tls::read_ca("the service account's ca.crt", &path)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().context("cannot build the HTTP client")
    }
}

/// `spec.replicas` of a StatefulSet object. Kubernetes fills in its default (1) on
/// creation, so an object without it is not one the API server returned.
fn replicas_of(statefulset: &Value) -> anyhow::Result<u64> {
    statefulset["spec"]["replicas"]
        .as_u64()
        .context("the answer has no spec.replicas")
}

/// The pod's name: the flag, else `POD_NAME`, else the hostname (which Kubernetes sets to
/// the pod name).
pub fn pod_name(flag: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = flag.filter(|n| !n.is_empty()) {
        return Ok(name.to_string());
    }
    if let Some(name) = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .context("no --pod-name, no POD_NAME and no readable hostname")?;
    Ok(hostname.trim().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_name_is_its_statefulset_and_ordinal() {
        let pod = PodIdentity::parse("quorumkv-12").unwrap();
        assert_eq!(pod.statefulset, "quorumkv");
        assert_eq!(pod.ordinal, 12);
        let dashed = PodIdentity::parse("kv-store-eu-3").unwrap();
        assert_eq!(
            (dashed.statefulset.as_str(), dashed.ordinal),
            ("kv-store-eu", 3)
        );
    }

    #[test]
    fn a_name_without_an_ordinal_is_refused() {
        for name in [
            "quorumkv",
            "quorumkv-",
            "quorumkv-a",
            "-3",
            "quorumkv-+3",
            "",
        ] {
            assert!(PodIdentity::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn only_pods_past_the_replicas_leave() {
        assert_eq!(decide(3, 3), Decision::Leave);
        assert_eq!(decide(4, 3), Decision::Leave);
        assert_eq!(decide(2, 3), Decision::Stay);
        assert_eq!(decide(0, 1), Decision::Stay);
        assert_eq!(decide(0, 0), Decision::Leave);
    }

    #[test]
    fn the_replicas_come_from_the_spec() {
        assert_eq!(
            replicas_of(&json!({"spec": {"replicas": 5}, "status": {"replicas": 4}})).unwrap(),
            5
        );
        assert!(replicas_of(&json!({"status": {"replicas": 4}})).is_err());
        assert!(replicas_of(&json!({"spec": {"replicas": "3"}})).is_err());
    }

    #[test]
    fn a_flag_names_the_api_server() {
        let access = ApiAccess::new(Some("http://127.0.0.1:8080/"), Path::new("/sa")).unwrap();
        assert_eq!(access.base, "http://127.0.0.1:8080");
    }
}
