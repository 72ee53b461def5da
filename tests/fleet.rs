//! One file for many repositories and hosts: `repos` fan-out, `hosts` with `--host-id`, and
//! the host-wide `max_runners`, through `corral check` and `corral plan`.

use std::fs;
use std::path::Path;

use crate::check::{refused, refused_beyond_schema};
use crate::kit::cmd;
use crate::schema::Beyond;

const HEAD: &str =
    "base:\n  path: ./base\nstate_dir: ./state\ngithub:\n  token_env: GITHUB_TOKEN\n";

fn write(dir: &Path, rest: &str) {
    fs::write(dir.join("runners.yaml"), format!("{HEAD}{rest}")).expect("write config");
}

/// `corral ARGS` in a temp dir holding `HEAD` + `rest`; exit code and stdout.
fn corral(rest: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), rest);
    let out = cmd::run(dir.path(), args);
    let (stdout, stderr) = cmd::texts(&out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.path().join("state").exists(),
        "check and plan create nothing"
    );
    (out.status.code(), stdout)
}

/// The runner headers (`name:` lines) of a plan, in order.
fn planned(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("+ "))
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn repos_fan_out_into_one_set_per_repository() {
    let (code, out) = corral(
        "runners:\n  - name: ci\n    repos: [alice/web, alice/api]\n    count: 2\n    labels: [docker]\n",
        &["plan"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        planned(&out),
        ["ci-api-1", "ci-api-2", "ci-web-1", "ci-web-2"]
    );
}

#[test]
fn repos_without_count_give_one_runner_each() {
    let (code, out) = corral(
        "runners:\n  - name: ci\n    repos: [alice/web, https://github.com/bob/tools]\n",
        &["check", "--host-id", "h1"],
    );
    assert_eq!(code, Some(0));
    assert_eq!(out, "runners.yaml: ok, 2 runners on host h1\n");
}

#[test]
fn repositories_sharing_a_name_are_told_apart_by_owner() {
    let (code, out) = corral(
        "runners:\n  - name: ci\n    repos: [alice/web, bob/web, bob/api]\n",
        &["plan"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(planned(&out), ["ci-alice-web", "ci-api", "ci-bob-web"]);
}

#[test]
fn repo_and_repos_together_are_refused() {
    refused(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repo: a/b\n    repos: ⟨[a/c]\n",
        "runners[0].repos: set repo or repos, not both",
    );
}

#[test]
fn a_bad_repository_in_repos_is_refused_where_it_is() {
    refused(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repos: [a/b, ⟨nope]\n",
        "runners[0].repos[1]: ",
    );
}

#[test]
fn a_repository_listed_twice_is_refused() {
    refused_beyond_schema(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repos:\n      - a/b\n      - ⟨A/B\n",
        "runners[0].repos[1]: repository \"A/B\" is listed twice",
        Beyond::IgnoringCase,
    );
}

#[test]
fn fan_out_names_still_unique_across_entries() {
    refused_beyond_schema(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repos: [a/web]\n  - name: ⟨ci-web\n    repo: a/other\n",
        "runners[1].name: runner name \"ci-web\" is used twice (also by runners[0].name)",
        Beyond::UniqueNames,
    );
}

#[test]
fn fan_out_name_too_long_is_refused_at_its_repository() {
    let long = "r".repeat(62);
    refused_beyond_schema(
        &format!("base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repos: [a/b, ⟨a/{long}]\n"),
        "runners[0].repos[1]: runner names for this repository: invalid runner name",
        Beyond::JoinedName,
    );
}

#[test]
fn an_entry_for_other_hosts_is_left_alone() {
    let rest = "runners:\n  - name: web\n    repo: o/web\n    hosts: [build-1]\n  - name: api\n    repo: o/api\n    hosts: [build-2, BUILD-3]\n  - name: all\n    repo: o/all\n";
    let (code, out) = corral(rest, &["plan", "--host-id", "build-1"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(planned(&out), ["all", "web"]);
    assert!(
        out.ends_with("left alone on host build-1 (not in their hosts): api\n"),
        "{out}"
    );
    // Host ids compare without case, as host names do.
    let (_, out) = corral(rest, &["plan", "--host-id", "build-3"]);
    assert_eq!(planned(&out), ["all", "api"]);
    let (code, out) = corral(rest, &["check", "--host-id", "elsewhere"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "runners.yaml: ok, 1 runner on host elsewhere\nleft alone on host elsewhere (not in their hosts): web, api\n"
    );
}

#[test]
fn the_host_id_comes_from_the_environment_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "runners:\n  - name: web\n    repo: o/web\n    hosts: [h-env]\n",
    );
    let out = std::process::Command::new(cmd::binary())
        .args(["check"])
        .current_dir(dir.path())
        .env("CORRAL_HOST_ID", "h-env")
        .output()
        .expect("run corral");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "runners.yaml: ok, 1 runner on host h-env\n"
    );
}

#[test]
fn a_bad_host_id_is_refused() {
    let (code, out) = corral("runners: []\n", &["check", "--host-id", "a b"]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
}

#[test]
fn empty_or_repeated_hosts_are_refused() {
    refused(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repo: a/b\n    hosts: ⟨[]\n",
        "runners[0].hosts: hosts may not be empty",
    );
    refused_beyond_schema(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repo: a/b\n    hosts: [h1, ⟨H1]\n",
        "runners[0].hosts[1]: host \"H1\" is listed twice",
        Beyond::IgnoringCase,
    );
}

#[test]
fn names_are_unique_across_hosts() {
    refused_beyond_schema(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: web\n    repo: a/b\n    hosts: [h1]\n  - name: ⟨web\n    repo: a/b\n    hosts: [h2]\n",
        "runners[1].name: runner name \"web\" is used twice (also by runners[0].name)",
        Beyond::UniqueNames,
    );
}

#[test]
fn max_runners_leaves_the_last_in_file_order_out_and_says_so() {
    let rest = "max_runners: 3\nrunners:\n  - name: b\n    repo: o/b\n    count: 2\n  - name: a\n    repo: o/a\n    count: 2\n";
    let (code, out) = corral(rest, &["plan"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(planned(&out), ["a-1", "b-1", "b-2"]);
    assert!(
        out.ends_with("not created (max_runners: 3): a-2\n"),
        "{out}"
    );
    let (_, out) = corral(rest, &["check"]);
    assert!(out.contains("ok, 3 runners"), "{out}");
    assert!(
        out.ends_with("not created (max_runners: 3): a-2\n"),
        "{out}"
    );
}

#[test]
fn max_runners_counts_only_this_hosts_entries() {
    let rest = "max_runners: 1\nrunners:\n  - name: other\n    repo: o/x\n    hosts: [h2]\n  - name: mine\n    repo: o/y\n";
    let (_, out) = corral(rest, &["plan", "--host-id", "h1"]);
    assert_eq!(planned(&out), ["mine"]);
    assert!(!out.contains("not created"), "{out}");
}

#[test]
fn zero_max_runners_is_refused() {
    refused(
        "base:\n  path: ./b\ngithub:\n  token_env: T\nmax_runners: ⟨0\nrunners: []\n",
        "max_runners: max_runners must be at least 1",
    );
}

#[test]
fn runners_of_an_entry_moved_to_another_host_drain_here() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "runners:\n  - name: web\n    repo: o/web\n    hosts: [build-2]\n",
    );
    let runner = dir.path().join("state/runners/web");
    fs::create_dir_all(&runner).expect("mkdir");
    fs::write(runner.join(".runner"), "{}").expect("write");
    let out = cmd::run(dir.path(), &["plan", "--host-id", "build-1"]);
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "- web: deregister, deprovision (out of the file: draining until its job ends)\nPlan: 0 to add, 0 to change, 1 to drain, 0 to remove.\nleft alone on host build-1 (not in their hosts): web\n"
    );
    let out = cmd::run(dir.path(), &["plan", "--host-id", "build-2"]);
    let (stdout, _) = cmd::texts(&out);
    assert!(
        stdout.starts_with("~ web: ")
            && stdout.contains(", start")
            && !stdout.contains("left alone"),
        "its own host keeps it: {stdout}"
    );
    assert!(runner.join(".runner").is_file(), "plan changes nothing");
}

#[test]
fn a_scaled_entry_plans_its_min_idle_and_shares_max_runners() {
    let rest = "max_runners: 3\nrunners:\n  - name: fixed\n    repo: o/a\n    count: 2\n  - name: ci\n    repos: [o/web, o/api]\n    scale: {min_idle: 1, max: 4, idle_timeout: 1m}\n";
    let (code, out) = corral(rest, &["plan"]);
    assert_eq!(code, Some(0), "{out}");
    // The fixed runners first; the pools share what is left in file order (web, then api).
    assert_eq!(planned(&out), ["ci-web-1", "fixed-1", "fixed-2"]);
    assert!(
        out.ends_with("not created (max_runners: 3): ci-api-1\n"),
        "{out}"
    );
    let (code, out) = corral(rest, &["check"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("runners.yaml: ok, 2 runners and 2 scaled set(s) of up to 8 on host"),
        "{out}"
    );
}

#[test]
fn scale_rules_are_checked() {
    let head =
        "base:\n  path: ./b\ngithub:\n  token_env: T\nrunners:\n  - name: ci\n    repo: a/b\n";
    refused(
        &format!("{head}    count: ⟨2\n    scale: {{max: 3}}\n"),
        "runners[0].count: set count or scale, not both",
    );
    refused_beyond_schema(
        &format!("{head}    scale: {{max: 2, min_idle: ⟨3}}\n"),
        "runners[0].scale.min_idle: min_idle 3 is more than max 2",
        Beyond::Comparison,
    );
    refused(
        &format!("{head}    scale: {{max: ⟨0}}\n"),
        "runners[0].scale.max: max must be at least 1",
    );
    refused(
        &format!("{head}    ephemeral: ⟨false\n    scale: {{max: 2}}\n"),
        "runners[0].ephemeral: runner \"ci\" has `scale`, which needs ephemeral runners",
    );
    refused(
        &format!("{head}    scale: {{max: 2, idle_timeout: ⟨soon}}\n"),
        "runners[0].scale.idle_timeout: ",
    );
    refused(
        "base:\n  path: ./b\nrunners:\n  - name: ci\n    repo: a/b\n    registration_token_env: RT\n    scale: {⟨max: 2}\n",
        "runners[0].scale: scale needs github.token_env",
    );
    refused(
        &format!("{head}    scale: {{max: 2, scale_set: ⟨ci-set}}\n"),
        "runners[0].scale.scale_set: scale_set \"ci-set\" needs engine: scaleset",
    );
    refused(
        &format!("{head}    scale: {{engine: scaleset, max: 2, scale_set: ⟨\"../x\"}}\n"),
        "runners[0].scale.scale_set: ",
    );
}

#[test]
fn run_fans_out_and_leaves_other_hosts_entries_alone() {
    use crate::kit::daemon::{World, REPO};
    let mut world = World::new();
    world.gh.add_repo("owner/other");
    world.write_config(
        "  - name: ci\n    repos: [owner/repo, owner/other]\n  - name: theirs\n    repo: owner/repo\n    hosts: [build-2]\n",
    );
    world.start_with_env(&[("CORRAL_HOST_ID", "build-1")]);
    world.wait_idle(&["ci-repo", "ci-other"]);
    let names = |repo: &str| -> Vec<String> {
        world.gh.runners(repo).into_iter().map(|r| r.name).collect()
    };
    assert_eq!(names(REPO), ["ci-repo"]);
    assert_eq!(names("owner/other"), ["ci-other"]);
    let status = world.status().expect("status");
    assert_eq!(status.runners.len(), 2, "{status:#?}");
    assert!(world.corral().output().contains("elsewhere=[\"theirs\"]"));
}
