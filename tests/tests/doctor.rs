//! `bastionctl doctor` against the real, running bastion: all green, then
//! each part broken for real (dockerd stopped, a firewall rule deleted,
//! the image removed, the log directory opened to all, the proxy and
//! bastiond stopped, a config typo). Each time doctor names the broken
//! piece and exits non-zero; running the fix it prints makes it green
//! again. One test: the breakages must not overlap.
#![forbid(unsafe_code)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// `bastionctl doctor --json`: (exit code, report).
fn doctor() -> (i32, Value) {
    let out = Command::new("/usr/local/bin/bastionctl")
        .args(["doctor", "--json", "--lib-dir"])
        .arg(repo().join("provisioning"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn failed(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

/// Doctor has no FAIL (a warn, e.g. an image without k9s, is allowed).
fn assert_green(when: &str) {
    // The daemons may take a moment to see a part that came back.
    let mut last = Value::Null;
    let green = eventually(Duration::from_secs(60), || {
        let (code, report) = doctor();
        last = report;
        code == 0 && failed(&last).is_empty()
    });
    assert!(green, "doctor is not green {when}: {last:#}");
    assert_ne!(last["status"], "fail");
}

/// Doctor fails, naming exactly the `broken` checks among its FAILs (and
/// perhaps others that depend on them); returns the report.
fn assert_names(broken: &[&str]) -> Value {
    let (code, report) = doctor();
    assert_eq!(code, 1, "doctor must exit 1: {report:#}");
    assert_eq!(report["status"], "fail");
    let fails = failed(&report);
    for b in broken {
        assert!(
            fails.iter().any(|f| f == b),
            "{b} not named: {fails:?}\n{report:#}"
        );
        assert!(
            check(&report, b)["fix"]
                .as_str()
                .is_some_and(|f| !f.is_empty()),
            "{b} has no fix: {report:#}"
        );
    }
    report
}

/// Runs the fix doctor printed for `name`.
fn run_fix(report: &Value, name: &str) {
    let fix = check(report, name)["fix"].as_str().unwrap().to_owned();
    run_ok(Command::new("sh").args(["-c", &fix]));
}

#[test]
fn doctor_names_each_broken_part_and_its_fix_makes_it_green_again() {
    require_bastion();
    assert_green("at the start");
    let (_, report) = doctor();
    for name in [
        "config",
        "docker",
        "firewall",
        "bastiond",
        "metadata proxy",
        "sts",
        "sshd",
        "sshd config",
        "log directory",
        "audit chain",
        "tool kubectl",
        "tool kubectx",
        "tool kubens",
        "tool aws",
    ] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    let k9s = check(&report, "tool k9s");
    assert_ne!(k9s["status"], "fail", "{k9s}");
    if k9s["status"] == "warn" {
        assert!(k9s["fix"].as_str().unwrap().contains("--k9s"), "{k9s}");
    }
    // The text form: one line a check, the summary last.
    let text = Command::new("/usr/local/bin/bastionctl")
        .args(["doctor", "--lib-dir"])
        .arg(repo().join("provisioning"))
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("ok   docker: ")),
        "{text}"
    );
    assert!(text.lines().last().unwrap().contains("ok"), "{text}");

    // dockerd stopped.
    service("stop", "dockerd");
    let report = assert_names(&["docker"]);
    let fix = check(&report, "docker")["fix"].as_str().unwrap().to_owned();
    assert!(fix.ends_with("bastion-service start dockerd"), "{fix}");
    run_fix(&report, "docker");
    assert_green("after dockerd came back");

    // A firewall rule deleted: the IMDS DNAT.
    let nat = "BMP-bastion0-NAT";
    let rule = run_ok(Command::new("iptables").args(["-w", "-t", "nat", "-S", nat]));
    let rule = String::from_utf8(rule.stdout).unwrap();
    let dnat = rule
        .lines()
        .find(|l| l.contains("169.254.169.254"))
        .unwrap_or_else(|| panic!("no IMDS DNAT in {nat}: {rule}"))
        .replacen("-A ", "-D ", 1);
    run_ok(
        Command::new("iptables")
            .args(["-w", "-t", "nat"])
            .args(dnat.split_whitespace()),
    );
    let report = assert_names(&["firewall"]);
    assert!(
        check(&report, "firewall")["detail"]
            .as_str()
            .unwrap()
            .contains("169.254.169.254"),
        "the missing rule is named: {report:#}"
    );
    run_fix(&report, "firewall");
    assert_green("after the firewall was applied again");
    // The demo STS port stayed open to containers (the fix re-applied the
    // installed rules, not a subset).
    let rules = run_ok(Command::new("iptables").args(["-w", "-S", "BMP-bastion0-IN"]));
    assert!(
        String::from_utf8_lossy(&rules.stdout).contains("--dport 5000"),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );

    // The image removed (its tag: the image itself is kept to put back).
    let image = "bastion/user:latest";
    let keep = "bastion/user:doctor-test-keep";
    docker(&["tag", image, keep]);
    docker(&["image", "rm", image]);
    let report = doctor().1;
    docker(&["tag", keep, image]);
    docker(&["image", "rm", keep]);
    assert_eq!(report["status"], "fail", "{report:#}");
    let name = format!("image {image}");
    assert_eq!(check(&report, &name)["status"], "fail", "{report:#}");
    assert!(
        check(&report, &name)["fix"]
            .as_str()
            .unwrap()
            .contains("build.sh")
    );
    assert_green("after the image came back");

    // The log directory opened to everyone.
    let log_dir = std::path::Path::new("/var/log/bastion");
    std::fs::set_permissions(log_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let report = assert_names(&["log directory"]);
    run_fix(&report, "log directory");
    assert_eq!(
        std::fs::metadata(log_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_green("after the log directory was closed again");

    // The proxy gone (its supervisor first, so nothing restarts it).
    service("stop", "metadata-proxy");
    let report = assert_names(&["metadata proxy", "sts"]);
    run_fix(&report, "metadata proxy");
    assert_green("after the proxy was restarted");

    // bastiond gone.
    service("stop", "bastiond");
    let report = assert_names(&["bastiond"]);
    run_fix(&report, "bastiond");
    assert_green("after bastiond was restarted");

    // A typo in the config.
    let config = std::fs::read_to_string(CONFIG_PATH).unwrap();
    write_config(&format!("{config}\n[bastiond.userz.x]\nimage = \"y\"\n"));
    let report = doctor().1;
    write_config(&config);
    assert_eq!(check(&report, "config")["status"], "fail", "{report:#}");
    let detail = check(&report, "config")["detail"].as_str().unwrap();
    assert!(detail.contains("userz"), "the key is named: {detail}");
    assert!(detail.contains("line"), "the line is named: {detail}");
    assert_green("after the config was fixed");
}
