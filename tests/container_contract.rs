//! The container contract, checked without a container engine: the image definition, the
//! compose file and the Kubernetes manifests (linted by hadolint and validated against the
//! Kubernetes schemas when those tools are installed — `.ci/run` installs them and sets
//! LINTERS_REQUIRED — and parsed and checked here always), and the binary run the way a
//! container runs it: configured by environment variables alone.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crmsync::config::EnvVars;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The linter `name` (from the variable `env`, else the PATH), or `None` with a note; a
/// failure instead when LINTERS_REQUIRED is set.
fn linter(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("LINTERS_REQUIRED").is_none(),
            "LINTERS_REQUIRED is set but {name} is neither on PATH nor named by {env}"
        );
        eprintln!("skipped: {name} is not installed (set {env} or put it on PATH)");
    }
    found
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the file");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("valid YAML"))
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Every `CRMSYNC_*` name among `names` must be a setting crmsync reads.
fn assert_known_settings<'a>(names: impl Iterator<Item = &'a str>, place: &str) {
    let known = crmsync::config::setting_env_vars();
    for name in names.filter(|name| name.starts_with("CRMSYNC_")) {
        assert!(
            known.iter().any(|setting| setting == name) || name == "CRMSYNC_CONFIG",
            "{place}: {name} is no crmsync setting"
        );
    }
}

#[test]
fn the_image_builds_in_two_stages_and_runs_crmsync_unprivileged() {
    let path = repo().join("docker/Dockerfile");
    if let Some(hadolint) = linter("hadolint", "HADOLINT") {
        let output = Command::new(hadolint)
            .arg(&path)
            .output()
            .expect("hadolint runs");
        assert!(
            output.status.success(),
            "hadolint: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dockerfile = std::fs::read_to_string(&path).expect("docker/Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let stages = instructions
        .iter()
        .filter(|line| line.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    // The build stage copies every top-level directory the sources compile in.
    let build_copies: Vec<&str> = instructions
        .iter()
        .take_while(|line| !line.starts_with("FROM ") || line.contains(" AS build"))
        .filter_map(|line| line.strip_prefix("COPY "))
        .flat_map(|line| line.split_whitespace())
        .collect();
    for needed in compiled_in_directories() {
        assert!(
            build_copies.contains(&needed.as_str()),
            "the build stage does not COPY {needed}, which the sources include"
        );
    }
    let runtime: Vec<&str> = instructions
        .iter()
        .rev()
        .take_while(|line| !line.starts_with("FROM "))
        .copied()
        .collect();
    let user = runtime
        .iter()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the runtime stage names its user");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .expect("a numeric user id");
    assert_ne!(uid, 0, "not root");
    assert!(runtime.contains(&r#"ENTRYPOINT ["crmsync"]"#));
    assert!(runtime.contains(&r#"CMD ["sync"]"#));
    assert!(runtime.contains(&"EXPOSE 9464"));
    assert!(dockerfile.contains("ca-certificates"));
    // Secrets never go into the image: no variable holding one is set.
    for line in instructions.iter().filter(|line| {
        line.starts_with("ENV ") || line.starts_with("CRMSYNC_") || line.starts_with("ARG ")
    }) {
        for word in ["TOKEN=", "PASSWORD=", "SECRET=", "KEY="] {
            assert!(!line.contains(word), "a secret in the image: {line}");
        }
    }
    let settings: Vec<&str> = dockerfile
        .split_whitespace()
        .filter_map(|word| word.split_once('=').map(|(name, _)| name))
        .collect();
    assert_known_settings(settings.into_iter(), "Dockerfile");
}

#[test]
fn the_compose_file_wires_the_emulator_the_warehouse_and_a_worker() {
    let documents = yaml_documents(&repo().join("docker/compose.yaml"));
    let services = &documents[0]["services"];
    for name in ["emulator", "postgres", "worker"] {
        assert!(!services[name].is_null(), "service {name}");
    }
    let worker = &services["worker"];
    assert_eq!(text(&worker["command"][0]), "serve");
    let environment: BTreeMap<String, String> =
        serde_yaml_ng::from_value(worker["environment"].clone()).expect("a map of variables");
    assert_known_settings(environment.keys().map(String::as_str), "compose worker");
    assert!(environment["CRMSYNC_WAREHOUSE_URL"].starts_with("postgres://crmsync@postgres:"));
    // The worker reads the config the emulator writes, and reaches it by its service name.
    let emulator_args: Vec<&str> = services["emulator"]["command"]
        .as_sequence()
        .expect("the emulator's command")
        .iter()
        .map(text)
        .collect();
    let after = |flag: &str| {
        emulator_args
            .iter()
            .position(|arg| *arg == flag)
            .and_then(|at| emulator_args.get(at + 1))
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(after("--public-url"), "http://emulator:8080");
    assert_eq!(
        environment["CRMSYNC_CONFIG"],
        format!("{}/crmsync.toml", after("--config-dir"))
    );
    let password_variable = &environment["CRMSYNC_WAREHOUSE_PASSWORD_ENV"];
    assert!(environment.contains_key(password_variable));
    assert!(
        worker["ports"]
            .as_sequence()
            .is_some_and(|ports| ports.iter().any(|port| text(port).ends_with(":9464")))
    );
    for dependency in ["emulator", "postgres"] {
        assert_eq!(
            text(&worker["depends_on"][dependency]["condition"]),
            "service_healthy"
        );
    }
}

#[test]
fn the_kubernetes_manifests_validate_and_wire_settings_and_secrets() {
    let dir = repo().join("docker/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("docker/k8s")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    if let Some(validate) = linter("kubernetes-validate", "KUBERNETES_VALIDATE") {
        let output = Command::new(validate)
            .arg("--strict")
            .args(&files)
            .output()
            .expect("kubernetes-validate runs");
        assert!(
            output.status.success(),
            "kubernetes-validate: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let resources: Vec<Value> = files.iter().flat_map(|file| yaml_documents(file)).collect();
    let find = |kind: &str| {
        resources
            .iter()
            .find(|resource| text(&resource["kind"]) == kind)
            .unwrap_or_else(|| panic!("a {kind}"))
    };
    let cronjob = find("CronJob");
    assert_eq!(text(&cronjob["spec"]["concurrencyPolicy"]), "Forbid");
    let settings: BTreeMap<String, String> =
        serde_yaml_ng::from_value(find("ConfigMap")["data"].clone()).expect("settings");
    assert_known_settings(settings.keys().map(String::as_str), "ConfigMap");
    let secret_keys: Vec<String> = find("Secret")["stringData"]
        .as_mapping()
        .expect("secret data")
        .keys()
        .map(|key| text(key).to_string())
        .collect();
    let config =
        crmsync::config::parse(None, Path::new("/"), &EnvVars::from_pairs(settings.clone())).0;
    let grace = config.schedule.stop_grace.as_secs();
    for workload in [
        &cronjob["spec"]["jobTemplate"]["spec"]["template"],
        &find("Deployment")["spec"]["template"],
    ] {
        let pod = &workload["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
        let termination = pod["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("a grace");
        assert!(
            termination > grace,
            "Kubernetes waits {termination} s, crmsync may take {grace} s to stop"
        );
        let container = &pod["containers"][0];
        // Every variable a setting names (`…_ENV`) is given, from the Secret.
        let given: Vec<&str> = container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .map(|variable| {
                let key = text(&variable["valueFrom"]["secretKeyRef"]["key"]);
                assert!(secret_keys.iter().any(|secret| secret == key), "{key}");
                text(&variable["name"])
            })
            .collect();
        for (name, value) in &settings {
            if name.ends_with("_ENV") {
                assert!(
                    given.contains(&value.as_str()),
                    "{name} = {value} is not set"
                );
            }
            if name.ends_with("_FILE") {
                let mounted = container["volumeMounts"]
                    .as_sequence()
                    .expect("mounts")
                    .iter()
                    .any(|mount| value.starts_with(text(&mount["mountPath"])));
                assert!(mounted, "{name} = {value} is not mounted");
            }
        }
    }
}

/// The top-level directories the sources' `include_str!`/`include_bytes!` read from.
fn compiled_in_directories() -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    let mut pending = vec![repo().join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap_or_default();
            let included = ["include_str!(\"", "include_bytes!(\""]
                .into_iter()
                .flat_map(|macro_call| source.split(macro_call).skip(1));
            for part in included {
                let Some(relative) = part.split('"').next() else {
                    continue;
                };
                let resolved = dir.join(relative);
                let Ok(inside) = normalize(&resolved)
                    .strip_prefix(repo())
                    .map(Path::to_path_buf)
                else {
                    continue;
                };
                if let Some(top) = inside.components().next() {
                    found.insert(top.as_os_str().to_string_lossy().into_owned());
                }
            }
        }
    }
    found
}

/// `path` with `..` and `.` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A free port on 127.0.0.1 (free when asked; the emulator binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn sync_runs_from_environment_variables_alone() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    // The emulator as compose runs it: reached by a name other than its listen address, and
    // writing its credentials where the worker finds them.
    let credentials = scratch.path().join("emulator");
    let mut emulator = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args([
            "emulate",
            "--records",
            "150",
            "--rate-limits",
            "off",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--public-url")
        .arg(format!("http://localhost:{port}"))
        .arg("--config-dir")
        .arg(&credentials)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the emulator starts");
    let mut line = String::new();
    BufReader::new(emulator.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its details");
    let info: serde_json::Value = serde_json::from_str(&line).expect("JSON details");
    assert_eq!(
        info["salesforce_login_url"],
        format!("http://localhost:{port}")
    );
    let written = std::fs::read_to_string(credentials.join("crmsync.toml")).expect("its config");
    assert!(written.contains(&format!("http://localhost:{port}")));

    // No config file anywhere: the working directory is empty and CRMSYNC_CONFIG unset.
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).expect("a working directory");
    let base = format!("http://localhost:{port}");
    let output = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["sync", "--json"])
        .current_dir(&work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CRMSYNC_HUBSPOT_BASE_URL", &base)
        .env("CRMSYNC_HUBSPOT_AUTH_METHOD", "private_app")
        .env("CRMSYNC_HUBSPOT_AUTH_TOKEN_ENV", "HUBSPOT_TOKEN")
        .env("HUBSPOT_TOKEN", text_of(&info["hubspot_token"]))
        .env("CRMSYNC_SALESFORCE_LOGIN_URL", &base)
        .env("CRMSYNC_SALESFORCE_AUTH_METHOD", "jwt_bearer")
        .env(
            "CRMSYNC_SALESFORCE_AUTH_CLIENT_ID",
            text_of(&info["salesforce_client_id"]),
        )
        .env(
            "CRMSYNC_SALESFORCE_AUTH_USERNAME",
            text_of(&info["salesforce_username"]),
        )
        .env(
            "CRMSYNC_SALESFORCE_AUTH_PRIVATE_KEY_FILE",
            credentials.join("secrets/salesforce.pem"),
        )
        .env("CRMSYNC_MAPPINGS_DIR", repo().join("mappings"))
        .env(
            "CRMSYNC_WAREHOUSE_URL",
            format!("sqlite://{}", work.join("warehouse.db").display()),
        )
        .output()
        .expect("crmsync sync runs");
    let _ = emulator.kill();
    let _ = emulator.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 2)),
        "{:?}: {stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a report");
    assert!(report["read"]["hubspot"].as_u64() > Some(50), "{report}");
    assert!(report["read"]["salesforce"].as_u64() > Some(50), "{report}");
    assert!(
        report["warehouse"]["persons"].as_u64() > Some(100),
        "{report}"
    );
    assert!(work.join("warehouse.db").is_file());
    // Logs off a terminal are JSON lines; the token never shows.
    let token = text_of(&info["hubspot_token"]);
    assert!(!stderr.contains(&token));
    let first = stderr.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "{first}"
    );
}

fn text_of(value: &serde_json::Value) -> String {
    value.as_str().expect("a string").to_string()
}
