//! `configure` and `remove` (contract §3.3, §3.4, §9.5, §9.6) against the fake service.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::args::Command;
use crate::settings::{self, with_slash};
use crate::{diag, http, Ctx};

const TIMEOUT: Duration = Duration::from_secs(30);
const BANNER: &str =
    "--------------------------------------------------------------------------------
|        ____ _ _   _   _       _          _        _   _                      |
|       / ___(_) |_| | | |_   _| |__      / \\   ___| |_(_) ___  _ __  ___      |
|      | |  _| | __| |_| | | | | '_ \\    / _ \\ / __| __| |/ _ \\| '_ \\/ __|     |
|      | |_| | | |_|  _  | |_| | |_) |  / ___ \\ (__| |_| | (_) | | | \\__ \\     |
|       \\____|_|\\__|_| |_|\\__,_|_.__/  /_/   \\_\\___|\\__|_|\\___/|_| |_|___/     |
|                                                                              |
|                       Self-hosted runner registration                        |
|                                                                              |
--------------------------------------------------------------------------------";

/// A failure already printed; carries the exit code.
struct Failed;

type Step<T> = Result<T, Failed>;

fn fail(msg: &str) -> Failed {
    diag::err(msg);
    Failed
}

pub fn configure(ctx: &Ctx, cmd: &Command) -> i32 {
    diag::out("");
    diag::out(BANNER);
    diag::out("");
    match try_configure(ctx, cmd) {
        Ok(()) => 0,
        Err(Failed) => 1,
    }
}

fn try_configure(ctx: &Ctx, cmd: &Command) -> Step<()> {
    let root = &ctx.root;
    if root.join(".runner").exists() || root.join(".runner_migrated").exists() {
        return Err(fail("Cannot configure the runner because it is already configured. To reconfigure the runner, run 'config.cmd remove' or './config.sh remove' first."));
    }
    // The real runner would prompt (and hang or throw on a pipe); the fake refuses instead.
    if !cmd.flag("unattended") && !std::io::stdin().is_terminal() {
        return Err(fail("Standard input is not a terminal: cannot prompt for missing configuration. Use --unattended."));
    }
    let url = required(cmd, "url")?;
    let (api, segments) = settings::api_base(&url).ok_or_else(|| {
        fail("Invalid configuration provided for url. Terminating unattended configuration.")
    })?;
    let token = registration_token(cmd, &api, &segments)?;
    let labels: Vec<String> = cmd
        .arg("labels")
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if cmd.flag("no-default-labels") && labels.is_empty() {
        return Err(fail("Disabling default labels via --no-default-labels without specifying --labels is not supported"));
    }
    // Written before registration and reused by a later attempt (contract §2.4).
    write_rsa_params(root)?;
    diag::out("");
    diag::out("# Authentication");
    diag::out("");
    let service = exchange(&api, &url, &token, "register")?;
    diag::out("√ Connected to GitHub");
    diag::out("");
    diag::out("# Runner Registration");
    diag::out("");
    let name = cmd.arg("name").unwrap_or_else(hostname);
    let work = cmd.arg("work").unwrap_or_else(|| "_work".to_owned());
    let mut body = json!({
        "name": name, "labels": labels, "no_default_labels": cmd.flag("no-default-labels"),
        "ephemeral": cmd.flag("ephemeral"), "disable_update": cmd.flag("disableupdate"),
        "replace": false, "version": ctx.knobs.version, "os": "Linux", "arch": "X64",
        "work_folder": work,
    });
    let added = add_runner(&service, &mut body, &name, cmd.flag("replace"))?;
    diag::out("");
    diag::out("# Runner settings");
    diag::out("");
    save_settings(ctx, cmd, &url, &service, &name, &work, &added)?;
    diag::out("√ Settings Saved.");
    diag::out("");
    Ok(())
}

/// Unattended or not, a missing value never prompts: the fake has no interactive mode.
fn required(cmd: &Command, name: &str) -> Step<String> {
    cmd.arg(name).ok_or_else(|| {
        fail(&format!(
            "Invalid configuration provided for {name}. Terminating unattended configuration."
        ))
    })
}

/// `--token`, or a token fetched with `--pat` from the REST API (`…/runners/registration-token`).
fn registration_token(cmd: &Command, api: &str, segments: &[String]) -> Step<String> {
    token_for(cmd, api, segments, "registration")
}

fn token_for(cmd: &Command, api: &str, segments: &[String], kind: &str) -> Step<String> {
    if let Some(token) = cmd.arg("token") {
        return Ok(token);
    }
    let Some(pat) = cmd.arg("pat") else {
        return required(cmd, "token");
    };
    let scope = match segments {
        [org] => format!("orgs/{org}"),
        [owner, repo, ..] => format!("repos/{owner}/{repo}"),
        [] => {
            return Err(fail(
                "Invalid configuration provided for url. Terminating unattended configuration.",
            ))
        }
    };
    let url = format!("{api}/{scope}/actions/runners/{kind}-token");
    let resp = call("POST", &url, Some(&format!("token {pat}")), None)?;
    if resp.status != 201 && resp.status != 200 {
        return Err(http_failure("POST", &url, &resp));
    }
    resp.json()["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| fail("Invalid token response"))
}

fn call(method: &str, url: &str, auth: Option<&str>, body: Option<&Value>) -> Step<http::Response> {
    http::request(method, url, auth, body, TIMEOUT).map_err(|e| fail(&e.to_string()))
}

/// The triple the real runner prints for a failed GitHub call (contract §3.3).
fn http_failure(method: &str, url: &str, resp: &http::Response) -> Failed {
    let (short, long) = http::reason(resp.status);
    let request_id = resp
        .header("x-github-request-id")
        .unwrap_or("0000:0000:FAKE:0000:00000000");
    diag::err(&format!(
        "Http response code: {short} from '{method} {url}' (Request Id: {request_id})"
    ));
    diag::err(&resp.body);
    fail(&format!(
        "Response status code does not indicate success: {} ({long}).",
        resp.status
    ))
}

/// Token exchange (README protocol step 1) → the service URL and service token.
fn exchange(api: &str, url: &str, token: &str, event: &str) -> Step<(String, String)> {
    let endpoint = format!("{api}/actions/runner-registration");
    let body = json!({"url": url, "runner_event": event});
    let resp = call(
        "POST",
        &endpoint,
        Some(&format!("RemoteAuth {token}")),
        Some(&body),
    )?;
    if resp.status != 200 {
        return Err(http_failure("POST", &endpoint, &resp));
    }
    let v = resp.json();
    match (v["url"].as_str(), v["token"].as_str()) {
        (Some(u), Some(t)) => Ok((with_slash(u), t.to_owned())),
        _ => Err(fail(
            "Invalid response from the runner registration endpoint.",
        )),
    }
}

/// Add runner (step 2); on a name clash with `--replace` the request is repeated with
/// `replace: true`, which gives the real runner's two-step output.
fn add_runner(
    service: &(String, String),
    body: &mut Value,
    name: &str,
    replace: bool,
) -> Step<Value> {
    let url = format!("{}runners", service.0);
    let auth = format!("Bearer {}", service.1);
    let mut resp = call("POST", &url, Some(&auth), Some(body))?;
    let mut replaced = false;
    if resp.status == 409 {
        diag::out("A runner exists with the same name");
        if !replace {
            return Err(fail(&format!("A runner exists with the same name {name}.")));
        }
        body["replace"] = json!(true);
        resp = call("POST", &url, Some(&auth), Some(&*body))?;
        replaced = true;
    }
    if resp.status != 201 && resp.status != 200 {
        let msg = resp.json()["message"].as_str().map(str::to_owned);
        return Err(msg.map_or_else(|| http_failure("POST", &url, &resp), |m| fail(&m)));
    }
    diag::out(if replaced {
        "√ Successfully replaced the runner"
    } else {
        "√ Runner successfully added"
    });
    Ok(resp.json())
}

fn save_settings(
    ctx: &Ctx,
    cmd: &Command,
    url: &str,
    service: &(String, String),
    name: &str,
    work: &str,
    added: &Value,
) -> Step<()> {
    let id = added["runner"]["id"]
        .as_u64()
        .ok_or_else(|| fail("The server did not return a runner id."))?;
    let client_id = added["client_id"].as_str().unwrap_or_default();
    let mut runner = json!({
        "agentId": id, "agentName": name, "poolId": 1, "poolName": "Default",
        "serverUrl": service.0, "gitHubUrl": url, "workFolder": work,
    });
    if cmd.flag("ephemeral") {
        runner["ephemeral"] = json!(true);
    }
    if cmd.flag("disableupdate") {
        runner["disableUpdate"] = json!(true);
    }
    let creds = json!({"scheme": "OAuth", "data": {
        "clientId": client_id,
        "authorizationUrl": format!("{}oauth2/token", service.0),
        "requireFipsCryptography": "True",
    }});
    let root = &ctx.root;
    let io = |e: std::io::Error| fail(&e.to_string());
    settings::write_json_bom(&root.join(".credentials"), &creds).map_err(io)?;
    settings::write_json_bom(&root.join(".runner"), &runner).map_err(io)?;
    write_svc_sh(ctx, url, name).map_err(io)
}

/// `svc.sh` from `bin/systemd.svc.sh.template`, placeholders filled like the real one.
fn write_svc_sh(ctx: &Ctx, url: &str, name: &str) -> std::io::Result<()> {
    let template = std::fs::read_to_string(ctx.bin.join("systemd.svc.sh.template"))?;
    let scope = settings::api_base(url)
        .map(|(_, s)| s.join("-"))
        .unwrap_or_default();
    let svc_name = format!("actions.runner.{scope}.{name}.service");
    let text = template
        .replace(
            "{{SvcDescription}}",
            &format!("GitHub Actions Runner ({scope}.{name})"),
        )
        .replace("{{SvcNameVar}}", &svc_name);
    let path = ctx.root.join("svc.sh");
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// `.credentials_rsaparams`, mode 600 from creation; an existing one is kept.
fn write_rsa_params(root: &Path) -> Step<()> {
    let path = root.join(".credentials_rsaparams");
    if path.exists() {
        return Ok(());
    }
    let b64 =
        |n: usize| base64::engine::general_purpose::STANDARD.encode(settings::pseudo_random(n));
    let params = json!({
        "d": b64(256), "dp": b64(128), "dq": b64(128), "exponent": "AQAB",
        "inverseQ": b64(128), "modulus": b64(256), "p": b64(128), "q": b64(128),
    });
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(params.to_string().as_bytes())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
    };
    write().map_err(|e| fail(&e.to_string()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".to_owned(), |s| s.trim().to_owned())
}

pub fn remove(ctx: &Ctx, cmd: &Command) -> i32 {
    diag::out("");
    diag::out("# Runner removal");
    diag::out("");
    match try_remove(ctx, cmd) {
        Ok(()) => 0,
        Err(Failed) => 1,
    }
}

fn try_remove(ctx: &Ctx, cmd: &Command) -> Step<()> {
    let root = &ctx.root;
    if root.join(".service").exists() {
        diag::err("Failed: Removing service");
        return Err(fail("Uninstall service first"));
    }
    if !cmd.flag("local") {
        let runner = settings::read_json(&root.join(".runner"));
        let creds_exist = root.join(".credentials").exists();
        match runner {
            Some(runner) if creds_exist => remove_on_server(cmd, &runner)?,
            _ => diag::out("Cannot connect to server, because config files are missing. Skipping removing runner from the server."),
        }
    }
    settings::delete_local_config(root);
    diag::out("");
    Ok(())
}

/// Remove-token exchange, then `DELETE {service}runners/{id}` (README steps 1 and 3).
fn remove_on_server(cmd: &Command, runner: &Value) -> Step<()> {
    let url = runner["gitHubUrl"].as_str().unwrap_or_default().to_owned();
    let id = runner["agentId"].as_u64().unwrap_or_default();
    let (api, segments) =
        settings::api_base(&url).ok_or_else(|| fail("Invalid gitHubUrl in .runner"))?;
    let token = token_for(cmd, &api, &segments, "remove")?;
    let service = exchange(&api, &url, &token, "remove")?;
    let endpoint = format!("{}runners/{id}", service.0);
    let resp = call(
        "DELETE",
        &endpoint,
        Some(&format!("Bearer {}", service.1)),
        None,
    )?;
    match resp.status {
        200 | 204 => diag::out("√ Runner removed successfully"),
        404 => diag::out("Does not exist. Skipping Removing runner from the server"),
        _ => {
            let msg = resp.json()["message"].as_str().map(str::to_owned);
            return Err(msg.map_or_else(|| http_failure("DELETE", &endpoint, &resp), |m| fail(&m)));
        }
    }
    Ok(())
}
