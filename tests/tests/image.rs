//! The users' image (image/): its pinned artifacts checked before use, a k9s
//! given to the offline build, and what the normal image must hold (git,
//! locales, labels, completions, the kube prompt, no setuid), all with the
//! real Docker Engine and the real `image/build.sh`. The normal image,
//! `bastion/user:latest`, is the one the test set-up built (it is not
//! rebuilt here; `BASTION_E2E_IMAGE=TAG` checks another build instead); the
//! images built here get test-only tags, removed at the end.
#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The normal image: the one the test set-up built, or `BASTION_E2E_IMAGE`.
fn image() -> &'static str {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        std::env::var("BASTION_E2E_IMAGE").unwrap_or_else(|_| "bastion/user:latest".to_owned())
    })
}
const NOTICE: &str = "k9s is not installed in this image: ops can add it with image/build.sh --k9s FILE (see docs/image.md)";

/// The locales the image must have, as clients send them.
const LOCALES: &str = "C.UTF-8 en_US.UTF-8 en_GB.UTF-8 de_DE.UTF-8 de_AT.UTF-8 de_CH.UTF-8 fr_FR.UTF-8 fr_CA.UTF-8 es_ES.UTF-8 \
     it_IT.UTF-8 nl_NL.UTF-8 pt_PT.UTF-8 pt_BR.UTF-8 sv_SE.UTF-8 da_DK.UTF-8 nb_NO.UTF-8 fi_FI.UTF-8 pl_PL.UTF-8 \
     cs_CZ.UTF-8 ru_RU.UTF-8 uk_UA.UTF-8 tr_TR.UTF-8 ja_JP.UTF-8 ko_KR.UTF-8 zh_CN.UTF-8 zh_TW.UTF-8";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails with a hint unless Docker answers and the normal image exists.
fn require_image() {
    assert!(
        docker_status(&["info"]),
        "the Docker Engine does not answer: run `sudo ./test.sh`"
    );
    assert!(
        docker_status(&["image", "inspect", image()]),
        "{} is missing: run `sudo ./test.sh` (it builds it with image/build.sh)",
        image()
    );
}

/// This machine's Debian architecture (amd64, arm64).
fn arch() -> String {
    text(&run_ok(Command::new("dpkg").arg("--print-architecture")).stdout)
        .trim()
        .to_owned()
}

/// image/versions.env as KEY -> VALUE.
fn versions(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A tag that is removed (with its image) when dropped.
struct TestTag(&'static str);

impl Drop for TestTag {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", self.0])
            .output();
    }
}

fn image_id(tag: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", tag])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| text(&out.stdout).trim().to_owned())
}

fn labels(tag: &str) -> BTreeMap<String, String> {
    serde_json::from_str(&docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        tag,
    ]))
    .unwrap()
}

/// `docker run --rm [args…] IMAGE sh -c SCRIPT` as nobody, output kept.
fn run_in(image: &str, args: &[&str], script: &str) -> Output {
    Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--user", "65534:65534"])
        .args(["-e", "HOME=/tmp"])
        .args(args)
        .args([image, "sh", "-c", script])
        .output()
        .unwrap()
}

/// Like [`run_in`], requiring success; stdout.
fn run_in_ok(image: &str, args: &[&str], script: &str) -> String {
    let out = run_in(image, args, script);
    assert!(
        out.status.success(),
        "{script:?} in {image} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// image/build.sh with `args`, the environment `env` added.
fn build(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(repo().join("image/build.sh"));
    cmd.args(args)
        .env_remove("BASTION_IMAGE_VERSIONS")
        .env_remove("BASTION_K9S")
        .env_remove("BASTION_KUBECTL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A test stand-in for k9s (a shell script, not k9s), packaged like the
/// upstream release tarball: `k9s` at the top, LICENSE and README.md beside.
fn stand_in_k9s_tarball(dir: &Path, name: &str, version: &str) -> PathBuf {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         # bastion e2e test stand-in for k9s: NOT k9s. Answers `version` and\n\
         # `completion bash` like it.\n\
         case \"$1\" in\n\
         version) echo 'Version: {version}'; echo \"uid: $(id -u)\" ;;\n\
         completion) echo 'complete -W \"version completion help\" k9s # e2e-stand-in-completion' ;;\n\
         *) echo 'k9s test stand-in' ;;\n\
         esac\n"
    );
    std::fs::write(pkg.join("k9s"), script).unwrap();
    std::fs::write(pkg.join("LICENSE"), "test stand-in\n").unwrap();
    std::fs::write(pkg.join("README.md"), "test stand-in\n").unwrap();
    run_ok(Command::new("chmod").arg("0755").arg(pkg.join("k9s")));
    let tarball = dir.join(name);
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&pkg)
            .args(["k9s", "LICENSE", "README.md"]),
    );
    tarball
}

/// A versions file for the tests: image/versions.env with the values of
/// `set` replacing its own, marked as a test file when `marked`.
fn test_versions(dir: &Path, set: &[(String, String)], marked: bool) -> PathBuf {
    let mut out = String::new();
    if marked {
        out.push_str("# e2e test versions file (tests/tests/image.rs)\nBASTION_TEST_VERSIONS=1\n");
    }
    for line in std::fs::read_to_string(repo().join("image/versions.env"))
        .unwrap()
        .lines()
    {
        match set.iter().find(|(k, _)| line.starts_with(&format!("{k}="))) {
            Some((k, v)) => out.push_str(&format!("{k}={v}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let path = dir.join(if marked {
        "test-versions.env"
    } else {
        "unmarked-versions.env"
    });
    std::fs::write(&path, out).unwrap();
    path
}

/// `NAME_SHA256_<ARCH>` of this machine.
fn sha_key(name: &str) -> String {
    format!("{name}_SHA256_{}", arch().to_uppercase())
}

/// Files removed when dropped (what build.sh kept from a test's build).
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[test]
fn a_tampered_k9s_download_is_refused_naming_the_file() {
    require_image();
    let dir = tempfile::tempdir().unwrap();
    let arch = arch();
    let pinned = versions(&repo().join("image/versions.env"))[&sha_key("K9S")].clone();
    // Looks like the release (a tarball with k9s at the top), is not it.
    let tampered = stand_in_k9s_tarball(dir.path(), "fake-k9s-tampered.tar.gz", "v0.51.0");
    let actual = sha256(&std::fs::read(&tampered).unwrap());
    assert_ne!(actual, pinned);
    let shown = tampered.to_str().unwrap();
    let says_why = |out: &Output, what: &str| {
        let err = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{what} accepted the tampered file: {err}"
        );
        assert!(err.contains(shown), "{what} does not name the file: {err}");
        assert!(
            err.contains(&format!("expected sha256 {pinned}")),
            "{what} does not give the expected checksum: {err}"
        );
        assert!(
            err.contains(&format!("actual sha256 {actual}")),
            "{what} does not give the actual checksum: {err}"
        );
    };

    // The helper both builds use: --check, and an install that must not
    // leave anything behind.
    let fetch = repo().join("image/fetch.sh");
    let out = Command::new(&fetch)
        .args(["--check", "k9s", &arch, shown])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    says_why(&out, "fetch.sh --check");
    let dest = dir.path().join("installed-k9s");
    let out = Command::new(&fetch)
        .args(["k9s", &arch])
        .arg(&dest)
        .args(["--from", shown])
        .output()
        .unwrap();
    says_why(&out, "fetch.sh --from");
    assert!(
        !dest.exists(),
        "fetch.sh installed a file that failed its check"
    );

    // The offline build: refused before anything is built or tagged.
    let tag = TestTag("bastion/e2e-image-tampered:test");
    let out = build(&["--tag", tag.0, "--k9s", shown], &[]);
    says_why(&out, "build.sh --k9s");
    assert!(
        text(&out.stderr).contains("nothing was built"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(image_id(tag.0), None, "a refused build tagged an image");

    // The tests' versions override is for the tests only: a file that does
    // not say so is refused, and it never builds the normal tag.
    let set = [
        ("K9S_VERSION".to_owned(), "v0.0.0-e2e-tampered".to_owned()),
        (sha_key("K9S"), actual.clone()),
    ];
    let unmarked = test_versions(dir.path(), &set, false);
    let out = build(
        &["--tag", tag.0, "--k9s", shown],
        &[("BASTION_IMAGE_VERSIONS", &unmarked)],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("BASTION_TEST_VERSIONS=1"),
        "{}",
        text(&out.stderr)
    );
    let before = image_id("bastion/user:latest");
    let marked = test_versions(dir.path(), &set, true);
    let out = build(&["--k9s", shown], &[("BASTION_IMAGE_VERSIONS", &marked)]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tests only"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        image_id("bastion/user:latest"),
        before,
        "bastion/user:latest changed"
    );
    assert_eq!(image_id(tag.0), None);
}

#[test]
fn files_matching_their_pins_are_installed_kept_and_labelled() {
    require_image();
    let dir = tempfile::tempdir().unwrap();
    let version = "v0.0.0-e2e-stand-in";
    let tarball = stand_in_k9s_tarball(
        dir.path(),
        &format!("k9s-e2e-stand-in_Linux_{}.tar.gz", arch()),
        version,
    );
    // The host's kubectl, given with --kubectl under a test pin of its own
    // checksum (a test version, so no real build ever takes it).
    let kubectl = std::fs::canonicalize("/usr/bin/kubectl").unwrap();
    let versions_file = test_versions(
        dir.path(),
        &[
            ("K9S_VERSION".to_owned(), version.to_owned()),
            (sha_key("K9S"), sha256(&std::fs::read(&tarball).unwrap())),
            ("KUBECTL_VERSION".to_owned(), "v0.0.0-e2e-host".to_owned()),
            (
                sha_key("KUBECTL"),
                sha256(&std::fs::read(&kubectl).unwrap()),
            ),
        ],
        true,
    );
    let env = [("BASTION_IMAGE_VERSIONS", versions_file.as_path())];
    let tag = TestTag("bastion/e2e-image-k9s:test");
    let out = build(
        &[
            "--tag",
            tag.0,
            "--k9s",
            tarball.to_str().unwrap(),
            "--kubectl",
            kubectl.to_str().unwrap(),
        ],
        &env,
    );
    let err = text(&out.stderr);
    // Both files are kept for later builds (removed at the end).
    let kept = RemoveOnDrop(
        err.lines()
            .filter_map(|l| l.split_once("for later builds: "))
            .map(|(_, path)| PathBuf::from(path))
            .collect(),
    );
    assert!(
        out.status.success(),
        "build.sh --k9s --kubectl failed:\n{err}"
    );
    assert_eq!(kept.0.len(), 2, "{err}");
    assert!(kept.0.iter().all(|f| f.is_file()), "{err}");

    // The stand-in, unchanged, at /usr/local/bin/k9s; it runs as a user.
    let script = std::fs::read(dir.path().join("pkg/k9s")).unwrap();
    let inside = run_in_ok(
        tag.0,
        &[],
        "sha256sum /usr/local/bin/k9s; ls -l /usr/local/bin/k9s",
    );
    assert!(inside.starts_with(&sha256(&script)), "{inside}");
    assert!(inside.contains("-rwxr-xr-x"), "{inside}");
    let said = run_in_ok(tag.0, &[], "k9s version");
    assert!(said.contains(&format!("Version: {version}")), "{said}");
    assert!(said.contains("uid: 65534"), "{said}");

    // Its completion was generated at build time, and bash loads it.
    let completion = run_in_ok(
        tag.0,
        &[],
        "cat /usr/share/bash-completion/completions/k9s; \
         bash -i -c '__load_completion k9s && complete -p k9s' 2>/dev/null",
    );
    assert!(
        completion.contains("e2e-stand-in-completion"),
        "{completion}"
    );
    assert!(completion.contains("complete -W"), "{completion}");

    // The labels name it and the pinned kubectl; no notice at login.
    let l = labels(tag.0);
    assert_eq!(l["bastion.image.k9s"], version);
    assert_eq!(l["bastion.image.kubectl.pinned"], "true");
    assert_eq!(l["bastion.image"], "user");
    let out = run_in(tag.0, &[], "bash -i -c true");
    assert!(
        !text(&out.stderr).contains("k9s is not installed"),
        "{out:?}"
    );

    // A later build without the files (as install.sh runs it) takes the
    // kept ones: nothing changed, nothing is rebuilt.
    let out = build(&["--tag", tag.0], &env);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("{} is up to date", tag.0)), "{err}");
    assert_eq!(labels(tag.0)["bastion.image.k9s"], version);
}

#[test]
fn the_image_has_git_and_git_upload_pack_works() {
    require_image();
    let out = run_in_ok(
        image(),
        &[],
        "set -e; command -v git-upload-pack; cd /tmp; \
         git init -q src; cd src; echo hello > f; git add f; \
         git -c user.name=t -c user.email=t@e commit -qm one; cd /tmp; \
         git clone -q --upload-pack=git-upload-pack file:///tmp/src dst; cat dst/f",
    );
    assert!(out.contains("git-upload-pack\n"), "{out}");
    assert!(out.ends_with("hello\n"), "{out}");
}

#[test]
fn client_locales_work_without_perl_warnings() {
    require_image();
    let listed: Vec<String> = labels(image())["bastion.image.locales"]
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(listed[0], "C.UTF-8", "{listed:?}");
    for l in LOCALES.split_whitespace() {
        assert!(listed.iter().any(|x| x == l), "{l} missing from {listed:?}");
    }
    // Every listed locale works as clients send it: perl (what warned)
    // says nothing, and the charmap is UTF-8.
    let script = listed
        .iter()
        .map(|l| format!("LANG={l} perl -e 1; printf '%s=' {l}; LC_ALL={l} locale charmap; "))
        .collect::<String>();
    let out = run_in(image(), &[], &script);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stderr), "", "warnings for the listed locales");
    for l in &listed {
        assert!(
            text(&out.stdout).contains(&format!("{l}=UTF-8\n")),
            "{l}: {}",
            text(&out.stdout)
        );
    }
    // The check would see a missing locale: one the image lacks warns.
    let out = run_in(image(), &["-e", "LANG=xx_XX.UTF-8"], "perl -e 1");
    assert!(
        text(&out.stderr).contains("locale"),
        "no warning for a missing locale: {out:?}"
    );
    let out = run_in(image(), &["-e", "LANG=de_DE.UTF-8"], "perl -e 1");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn the_labels_record_the_tools_versions() {
    require_image();
    let l = labels(image());
    assert_eq!(l["bastion.image"], "user");
    assert!(l["bastion.image.inputs"].starts_with("sha256:"), "{l:?}");
    let report = run_in_ok(
        image(),
        &[],
        "kubectl version --client -o json | jq -r .clientVersion.gitVersion; \
         for p in kubectx awscli git; do dpkg-query -W -f '${Version}\\n' $p; done",
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(l["bastion.image.kubectl"], lines[0]);
    assert_eq!(l["bastion.image.kubectx"], lines[1]);
    assert_eq!(l["bastion.image.awscli"], lines[2]);
    assert_eq!(l["bastion.image.git"], lines[3]);
    assert!(
        ["true", "false"].contains(&l["bastion.image.kubectl.pinned"].as_str()),
        "{l:?}"
    );
    // The Debian versions are the ones versions.env pins.
    let pins = versions(&repo().join("image/versions.env"));
    assert_eq!(l["bastion.image.kubectx"], pins["KUBECTX_DEB_VERSION"]);
    assert_eq!(l["bastion.image.awscli"], pins["AWSCLI_DEB_VERSION"]);
    // k9s: its version, or absent when it is not there.
    let has_k9s = run_in(image(), &[], "command -v k9s").status.success();
    if has_k9s {
        assert_eq!(l["bastion.image.k9s"], pins["K9S_VERSION"]);
    } else {
        assert_eq!(l["bastion.image.k9s"], "absent");
    }
}

#[test]
fn no_file_is_setuid_or_setgid() {
    require_image();
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", image()])
        .args(["find", "/", "-xdev", "-type", "f", "-perm", "/6000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "", "setuid/setgid files");
}

#[test]
fn an_image_without_k9s_says_so_once_and_quiet_shells_say_nothing() {
    require_image();
    if labels(image())["bastion.image.k9s"] != "absent" {
        // Built with k9s: the other side holds instead.
        let out = run_in(image(), &[], "bash -i -c 'k9s version'");
        assert!(out.status.success(), "{out:?}");
        assert!(!text(&out.stderr).contains("k9s is not installed"));
        return;
    }
    // An interactive shell, and one inside it: one line in all.
    let out = run_in(image(), &[], "bash -i -c 'bash -i -c true'");
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.lines().filter(|l| *l == NOTICE).count(), 1, "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("k9s")).count(),
        1,
        "only the notice: {err}"
    );
    // Non-interactive shells, login or not, print nothing at all.
    for script in ["bash -c true", "bash -l -c true"] {
        let out = run_in(image(), &[], script);
        assert!(out.status.success(), "{script}: {out:?}");
        assert_eq!(text(&out.stdout), "", "{script}");
        assert_eq!(text(&out.stderr), "", "{script}");
    }
}

#[test]
fn completions_exist_for_the_tools() {
    require_image();
    let out = run_in_ok(
        image(),
        &[],
        "bash -i -c 'for c in kubectl kubectx kubens; do __load_completion $c && complete -p $c; done; \
         complete -p aws' 2>/dev/null",
    );
    for c in ["kubectl", "kubectx", "kubens"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("complete ") && l.ends_with(&format!(" {c}"))),
            "no completion for {c}: {out}"
        );
    }
    assert!(
        out.lines().any(|l| l.starts_with("complete -C")
            && l.contains("aws_completer")
            && l.ends_with(" aws")),
        "no completion for aws: {out}"
    );
    // The completers answer.
    let out = run_in_ok(
        image(),
        &[],
        "COMP_LINE='aws sts get-caller' COMP_POINT=18 aws_completer",
    );
    assert_eq!(out.trim(), "get-caller-identity");
}

/// bastiond's kubeconfig layout (`~/.kube/bastion/config`, JSON-quoted) and
/// the user's own file, as kubectl writes it.
const MANAGED: &str = r#"# Written by bastion at each login from the access file: your clusters.
apiVersion: v1
kind: Config
preferences: {}
clusters:
- cluster:
    certificate-authority-data: "Zm9v"
    server: "https://demo.invalid"
  name: "demo"
- cluster:
    certificate-authority-data: "Zm9v"
    server: "https://other.invalid"
  name: "other"
users:
- name: "bastion@demo"
  user:
    token: "x"
contexts:
- context:
    cluster: "demo"
    namespace: "web"
    user: "bastion@demo"
  name: "demo"
- context:
    cluster: "other"
    user: "bastion@demo"
  name: "other"
"#;

#[test]
fn the_prompt_shows_the_kube_context_and_namespace_as_kubectl_sees_them() {
    require_image();
    let script = format!(
        "set -e; mkdir -p /tmp/.kube/bastion; cat > /tmp/.kube/bastion/config <<'EOF'\n{MANAGED}EOF\n\
         printf 'apiVersion: v1\\nkind: Config\\ncurrent-context: demo\\n' > /tmp/.kube/config\n\
         export KUBECONFIG=/tmp/.kube/config:/tmp/.kube/bastion/config\n\
         show() {{ bash -i -c '__bastion_kube_prompt; echo \"prompt=[$__bastion_kube]\"' 2>/dev/null; \
                   echo \"kubectl=[$(kubectl config current-context):$(kubectl config view --minify -o jsonpath='{{..namespace}}')]\"; }}\n\
         show\n\
         kubectx other >/dev/null; show\n\
         kubectl config set-context --current --namespace=ops >/dev/null; show\n\
         kubectx demo >/dev/null; kubectl config set-context --current --namespace=kube-system >/dev/null; show\n\
         BASTION_KUBE_PROMPT=off bash -i -c '__bastion_kube_prompt; echo \"off=[$__bastion_kube]\"' 2>/dev/null\n"
    );
    let out = run_in_ok(image(), &[], &script);
    let prompts: Vec<&str> = out.lines().filter(|l| l.starts_with("prompt=")).collect();
    let kubectl: Vec<&str> = out.lines().filter(|l| l.starts_with("kubectl=")).collect();
    assert_eq!(
        prompts,
        [
            "prompt=[demo:web]",
            "prompt=[other:default]",
            "prompt=[other:ops]",
            "prompt=[demo:kube-system]"
        ],
        "{out}"
    );
    // kubectl agrees (it leaves an unset namespace empty).
    assert_eq!(
        kubectl,
        [
            "kubectl=[demo:web]",
            "kubectl=[other:]",
            "kubectl=[other:ops]",
            "kubectl=[demo:kube-system]"
        ],
        "{out}"
    );
    assert!(out.contains("off=[]\n"), "{out}");

    // In the prompt itself, before user@host.
    let out = run_in_ok(
        image(),
        &["-e", "KUBECONFIG=/tmp/k", "--hostname", "box"],
        "printf 'current-context: \"arn:aws:eks:eu-west-1:1:cluster/prod\"\\n' > /tmp/k; \
         bash -i -c '__bastion_kube_prompt; echo \"${PS1@P}\"' 2>/dev/null",
    );
    assert!(out.contains("(prod:default) nobody@box:"), "{out}");
}

#[test]
fn commands_without_a_terminal_get_a_sane_term() {
    require_image();
    let out = run_in(
        image(),
        &["-e", "KUBECONFIG=/tmp/k"],
        "printf 'apiVersion: v1\\nkind: Config\\ncontexts:\\n- context: {cluster: \"c\", user: \"u\"}\\n  name: one\\ncurrent-context: one\\n' > /tmp/k; kubectx",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "one\n");
    assert_eq!(text(&out.stderr), "", "no tput errors");
}
