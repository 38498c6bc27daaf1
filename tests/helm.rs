//! The Helm chart, rendered offline with Helm's own SDK (helm-python-sdk,
//! installed by `scripts/venv`): values are schema-checked, the chart lints,
//! every rendered manifest validates against the Kubernetes API schemas, and
//! values drive the manifests as documented — including the Go chart's value
//! names.

#![allow(clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value as Json, json};
use serde_yaml::Value;

use crate::endpoint;
use crate::schema;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("deploy/helm/csi-provider-aws")
}

fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/venv (scripts/test does)",
        p.display()
    );
    p
}

/// Lint and render with `values`: Ok((lint report, manifests)) or Err(message).
fn render(values: Json) -> Result<(Json, Vec<Value>), String> {
    let out = Command::new(python())
        .arg(root().join("tests/support/helm.py"))
        .arg(chart())
        .arg(values.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Json = serde_json::from_slice(&out.stdout).unwrap();
    if let Some(e) = result["error"].as_str() {
        return Err(e.to_string());
    }
    let mut docs = Vec::new();
    for (_, text) in result["manifests"].as_object().unwrap() {
        use serde::Deserialize;
        for d in serde_yaml::Deserializer::from_str(text.as_str().unwrap()) {
            let v = Value::deserialize(d).unwrap();
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    Ok((result["lint"].clone(), docs))
}

/// The resources a ClusterRole's rules name, in order.
fn resources(role: &Value) -> Vec<&str> {
    role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_sequence().unwrap().iter().filter_map(Value::as_str))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn args(docs: &[Value]) -> Vec<String> {
    kind(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn validate_strict(docs: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let api = d["apiVersion"].as_str().unwrap_or_default();
        if api.starts_with("monitoring.coreos.com") {
            continue; // custom resources: no schema in the Kubernetes API
        }
        let f = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&f, serde_yaml::to_string(d).unwrap()).unwrap();
        files.push(f);
    }
    assert_eq!(schema::validate_strict(&files, "1.33.0"), files.len());
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn default_values_lint_and_render_valid_manifests() {
    let (lint, docs) = render(json!({})).unwrap();
    // The only finding: the optional driver dependency is not vendored in a
    // source checkout (`helm dependency build` fetches it).
    assert_eq!(
        lint["errors"],
        json!(["chart directory is missing these dependencies: secrets-store-csi-driver"]),
        "{lint}"
    );
    validate_strict(&docs);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let c = &pod["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["exec"]["command"],
            probe_command(),
            "{probe}: Version through the socket, not the network endpoint"
        );
    }
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["env"][0]["name"], "NODE_NAME");
    assert_eq!(
        pod["volumes"].as_sequence().unwrap().len(),
        1,
        "driver-writes: no kubelet hostPath"
    );
    // The binary accepts every argument the chart passes.
    let out = Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .args(args(&docs))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let role = kind(&docs, "ClusterRole");
    let resources = resources(role);
    assert_eq!(resources, vec!["serviceaccounts", "nodes", "events"]);
    let events = &role["rules"][2];
    assert_eq!(events["apiGroups"][0], "events.k8s.io");
    assert_eq!(events["verbs"], serde_yaml::to_value(["create", "patch"]).unwrap());
    let a = args(&docs);
    assert!(a.contains(&"--rotation-failure-events=true".to_string()), "{a:?}");
    assert!(a.contains(&"--rotation-event-interval=5m".to_string()), "{a:?}");
    // The memory budget follows the container's limit by default.
    assert!(a.contains(&"--memory-budget=auto".to_string()), "{a:?}");
    assert_eq!(c["resources"]["limits"]["memory"], "100Mi");
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn a_memory_budget_is_passed_to_the_binary() {
    let (_, docs) = render(json!({"memoryBudget": "64MiB"})).unwrap();
    let a = args(&docs);
    assert!(a.contains(&"--memory-budget=64MiB".to_string()), "{a:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_csi-provider-aws"))
        .args(&a)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    validate_strict(&docs);
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn rotation_failure_events_off_drops_the_events_rule_and_tells_the_binary() {
    let (_, docs) = render(json!({"rotationFailureEvents": false, "rotationEventInterval": "10m"})).unwrap();
    let role = kind(&docs, "ClusterRole");
    let resources = resources(role);
    assert_eq!(resources, vec!["serviceaccounts", "nodes"]);
    let a = args(&docs);
    assert!(a.contains(&"--rotation-failure-events=false".to_string()), "{a:?}");
    assert!(a.contains(&"--rotation-event-interval=10m".to_string()), "{a:?}");
    validate_strict(&docs);
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn an_aws_region_drops_the_nodes_rule_and_sets_the_environment() {
    let (_, docs) = render(json!({"awsRegion": "eu-west-1", "useFipsEndpoint": true})).unwrap();
    let role = kind(&docs, "ClusterRole");
    assert_eq!(role["rules"].as_sequence().unwrap().len(), 2);
    assert_eq!(role["rules"][0]["resources"][0], "serviceaccounts");
    assert_eq!(role["rules"][1]["resources"][0], "events");
    let env = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["env"];
    let pairs: Vec<(String, String)> = env
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .collect();
    assert!(pairs.contains(&("AWS_REGION".into(), "eu-west-1".into())));
    assert!(pairs.contains(&("AWS_USE_FIPS_ENDPOINT".into(), "true".into())));
    validate_strict(&docs);
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn provider_writes_mode_mounts_the_kubelet_pods_directory() {
    let (_, docs) = render(json!({"driverWritesSecrets": false, "kubeletPath": "/data/kubelet"})).unwrap();
    let c = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/data/kubelet/pods")
        .expect("kubelet pods mount");
    assert_eq!(mount["mountPropagation"], "HostToContainer");
    assert!(args(&docs).contains(&"--driver-writes-secrets=false".to_string()));
    validate_strict(&docs);
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn monitors_are_optional() {
    let (_, docs) = render(json!({})).unwrap();
    assert!(
        docs.iter()
            .all(|d| d["kind"] != "PodMonitor" && d["kind"] != "ServiceMonitor")
    );
    let (_, docs) = render(json!({"monitoring": {
        "podMonitor": {"enabled": true, "labels": {"release": "prom"}},
        "serviceMonitor": {"enabled": true}}}))
    .unwrap();
    assert_eq!(kind(&docs, "PodMonitor")["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        kind(&docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["path"],
        "/metrics"
    );
    assert_eq!(kind(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(kind(&docs, "Service")["spec"]["ports"][0]["port"], 8989);
    validate_strict(&docs);
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn the_http_endpoint_binds_every_address_or_only_the_pod_ip() {
    let limits = [
        "--http-max-connections=16",
        "--http-header-timeout=3s",
        "--http-idle-timeout=30s",
    ];
    for (values, addr, pod_ip, host) in [
        (json!({}), "0.0.0.0:8989", "127.0.0.1", "0.0.0.0"),
        (
            json!({"httpBindAddress": "0.0.0.0", "port": 9090}),
            "0.0.0.0:9090",
            "127.0.0.1",
            "0.0.0.0",
        ),
        (json!({"httpBindAddress": "::"}), "[::]:8989", "::1", "[::]"),
        (
            // The endpoint's limits are extraArgs, like the other limits.
            json!({"httpBindAddress": "pod-ip", "extraArgs": limits}),
            "$(POD_IP):8989",
            "127.0.0.1",
            "127.0.0.1",
        ),
        (
            json!({"httpBindAddress": "pod-ipv6", "port": 9090,
                   "monitoring": {"podMonitor": {"enabled": true}, "serviceMonitor": {"enabled": true}}}),
            "[$(POD_IP)]:9090",
            "::1",
            "[::1]",
        ),
    ] {
        let (lint, docs) = render(values.clone()).unwrap();
        assert_eq!(
            lint["errors"],
            json!(["chart directory is missing these dependencies: secrets-store-csi-driver"]),
            "{values}: {lint}"
        );
        validate_strict(&docs);
        let a = args(&docs);
        assert!(a.contains(&format!("--http-addr={addr}")), "{values}: {a:?}");
        let c = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
        let pod_ip_env: Vec<&Value> = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "POD_IP")
            .collect();
        if addr.contains("$(POD_IP)") {
            assert_eq!(pod_ip_env.len(), 1, "{values}");
            assert_eq!(pod_ip_env[0]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
        } else {
            assert!(pod_ip_env.is_empty(), "{values}: POD_IP only when bound to it");
        }
        // The probes do not use the endpoint, whatever its bind address.
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(c[probe]["httpGet"].is_null(), "{probe}");
        }
        if host.starts_with('[') && !endpoint::has_ipv6() {
            eprintln!("no IPv6 loopback here: not starting the provider with {values}");
            continue;
        }
        endpoint::assert_binds(c, pod_ip, host);
    }
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn the_schema_rejects_unknown_keys_and_wrong_types() {
    for (values, needle) in [
        (json!({"awsRegoin": "eu-west-1"}), "awsRegoin"),
        (json!({"port": "8989"}), "port"),
        (json!({"logFormat": "xml"}), "logFormat"),
        (json!({"cacheTtl": "five minutes"}), "cacheTtl"),
        (json!({"memoryBudget": "lots"}), "memoryBudget"),
        // Below the binary's 8 MiB minimum: refused here, not crash-looping.
        (json!({"memoryBudget": "4MiB"}), "memoryBudget"),
        (json!({"memoryBudget": "0"}), "memoryBudget"),
        (json!({"k8sThrottlingParams": {"qps": 0}}), "qps"),
        (json!({"podIdentityCacheScope": "node"}), "podIdentityCacheScope"),
        (json!({"image": {"repository": ""}}), "repository"),
        (json!({"httpBindAddress": "127.0.0.1"}), "httpBindAddress"),
        (json!({"httpBindAddress": "[::]"}), "httpBindAddress"),
    ] {
        let err = render(values.clone()).expect_err(&format!("{values} must be rejected"));
        assert!(err.contains(needle), "{values}: {err}");
    }
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn go_chart_values_keep_working() {
    let (_, docs) = render(json!({
        "port": 9090,
        "k8sThrottlingParams": {"qps": 20, "burst": 40},
        "rbac": {"install": true, "serviceAccountName": "custom-sa"},
        "dnsPolicy": "ClusterFirstWithHostNet",
        "podIdentityHttpTimeout": "2s",
        "eksAddonVersion": "v1.0.0-eksbuild.1",
        "priorityClassName": "",
        "podLabels": {"team": "platform"},
        "tolerations": [],
        "secrets-store-csi-driver": {"install": false},
    }))
    .unwrap();
    let a = args(&docs);
    for expected in [
        "--http-addr=0.0.0.0:9090",
        "--qps=20",
        "--burst=40",
        "--pod-identity-http-timeout=2s",
        "--eks-addon-version=v1.0.0-eksbuild.1",
    ] {
        assert!(a.contains(&expected.to_string()), "{a:?}");
    }
    let pod = &kind(&docs, "DaemonSet")["spec"]["template"];
    assert_eq!(pod["spec"]["serviceAccountName"], "custom-sa");
    assert_eq!(kind(&docs, "ServiceAccount")["metadata"]["name"], "custom-sa");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert!(pod["spec"]["priorityClassName"].is_null());
    assert!(pod["spec"]["tolerations"].is_null());
    validate_strict(&docs);
}

#[test]
fn every_template_input_is_declared_in_values_and_schema() {
    let values: Value = serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    let schema: Json =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap()).unwrap();
    let mut used = Vec::new();
    for entry in std::fs::read_dir(chart().join("templates")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in text.split(".Values.").skip(1) {
            let path: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                .collect();
            used.push(path.trim_end_matches('.').to_string());
        }
    }
    used.sort();
    used.dedup();
    assert!(used.len() > 25, "{used:?}");
    for path in &used {
        let mut v = &values;
        let mut s = &schema;
        for key in path.split('.') {
            v = v
                .get(key)
                .unwrap_or_else(|| panic!(".Values.{path} is not declared in values.yaml"));
            s = s["properties"]
                .get(key)
                .unwrap_or_else(|| panic!(".Values.{path} is not in values.schema.json"));
        }
    }
    // And the driver subchart values carry what this provider needs.
    let driver = &values["secrets-store-csi-driver"];
    assert_eq!(
        schema::token_audiences(&driver["tokenRequests"]),
        vec!["sts.amazonaws.com", "pods.eks.amazonaws.com"]
    );
    assert_eq!(driver["enableSecretRotation"], true);
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(
        chart_yaml["dependencies"][0]["condition"],
        "secrets-store-csi-driver.install"
    );
}

/// Validates `config` against the EKS add-on configuration schema.
fn addon_valid(config: &Json) -> Result<(), String> {
    let schema = root().join("deploy/eks-addon/configuration-schema.json");
    let out = Command::new(python())
        .arg("-c")
        .arg(
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             jsonschema.Draft7Validator.check_schema(schema)\n\
             errors = sorted(e.message for e in jsonschema.Draft7Validator(schema).iter_errors(json.loads(sys.argv[2])))\n\
             print('\\n'.join(errors))\n\
             sys.exit(1 if errors else 0)",
        )
        .arg(&schema)
        .arg(config.to_string())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn eks_addon_examples_validate_and_render_through_the_chart() {
    let dir = root().join("deploy/eks-addon/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let config: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        addon_valid(&config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The add-on passes its configuration to the chart as values.
        let (_, docs) = render(config.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        validate_strict(&docs);
        seen += 1;
    }
    assert!(seen >= 5);
    let (_, docs) = render(json!({"awsRegion": "us-gov-west-1", "useFipsEndpoint": true})).unwrap();
    let env =
        serde_yaml::to_string(&kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["env"]).unwrap();
    assert!(
        env.contains("us-gov-west-1") && env.contains("AWS_USE_FIPS_ENDPOINT"),
        "{env}"
    );
}

/// The settings an add-on configuration of the Go provider holds (its own
/// and the driver's) are taken with the same meaning.
#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn go_provider_addon_settings_are_taken_as_they_are() {
    let config: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/eks-addon/examples/go-provider-settings.json")).unwrap(),
    )
    .unwrap();
    addon_valid(&config).unwrap();
    let (_, docs) = render(config.clone()).unwrap();
    validate_strict(&docs);
    let pod = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["dnsPolicy"], "None");
    assert_eq!(pod["dnsConfig"]["nameservers"][0], "10.100.0.10");
    assert_eq!(pod["dnsConfig"]["options"][0]["name"], "ndots");
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 8989);
    let a = args(&docs);
    assert!(
        a.iter().any(|x| x.starts_with("--http-addr=") && x.ends_with(":8989")),
        "{a:?}"
    );
    assert!(a.contains(&"--burst=300".to_string()), "{a:?}");
    // The driver's settings are values of the driver subchart: the chart's
    // schema took them (the render above), and an audience list the
    // provider cannot work with is still the operator's to choose.
    assert_eq!(
        schema::token_audiences(&serde_yaml::to_value(&config["secrets-store-csi-driver"]["tokenRequests"]).unwrap()),
        vec!["sts.amazonaws.com", "pods.eks.amazonaws.com"]
    );
}

#[test]
#[ignore = "needs the Helm SDK (scripts/venv); scripts/test runs it"]
fn eks_addon_schema_rejects_bad_configurations_and_maps_onto_chart_values() {
    for (config, needle) in [
        (json!({"imageRepository": "x"}), "Additional properties are not allowed"),
        (json!({"cacheTtl": 300}), "is not of type 'string'"),
        (json!({"memoryBudget": "1GB"}), "does not match"),
        (json!({"memoryBudget": "8191KiB"}), "does not match"),
        (json!({"podIdentityCacheScope": "node"}), "is not one of"),
        (
            json!({"secrets-store-csi-driver": {"tokenRequests": [{"aud": "sts.amazonaws.com"}]}}),
            "'audience' is a required property",
        ),
        (
            json!({"dnsConfig": {"nameserver": ["10.0.0.10"]}}),
            "Additional properties are not allowed",
        ),
        (json!({"port": 70000}), "is greater than the maximum"),
        (json!({"awsRegion": "Oregon"}), "does not match"),
        (json!({"httpBindAddress": "10.0.0.1"}), "is not one of"),
    ] {
        let err = addon_valid(&config).expect_err(&config.to_string());
        assert!(err.contains(needle), "{config}: {err}");
    }
    let addon: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/eks-addon/configuration-schema.json")).unwrap(),
    )
    .unwrap();
    let chart: Json =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap()).unwrap();
    for key in addon["properties"].as_object().unwrap().keys() {
        assert!(
            chart["properties"].get(key).is_some(),
            "add-on key {key} is not a chart value"
        );
    }
}

/// The probe the DaemonSet runs: `probe` through the provider socket.
fn probe_command() -> Value {
    serde_yaml::to_value([
        "/bin/csi-provider-aws",
        "probe",
        "--provider-volume=/var/run/secrets-store-csi-providers",
    ])
    .unwrap()
}
