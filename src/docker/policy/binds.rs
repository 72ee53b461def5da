//! Bind mounts and volumes of a container: every bind source goes through the caller's
//! `resolve_bind`; named volumes become refs; volume drivers may not mount host paths.

use serde_json::Value;

use super::{Refs, Refusal, Scope};

/// Checks and rewrites `Binds` (`src:dst[:opts]`) and `Mounts` of type `bind`; named
/// volumes become refs. Returns true when any bind mount is left.
pub(super) fn rewrite_binds(
    host: &mut Value,
    scope: &Scope<'_>,
    resolve_bind: &dyn Fn(&str, bool) -> Result<String, Refusal>,
    refs: &mut Refs,
) -> Result<bool, Refusal> {
    let binds = rewrite_bind_specs(host, resolve_bind, refs)?;
    let mounts = rewrite_mounts(host, scope, resolve_bind, refs)?;
    Ok(binds || mounts)
}

/// `Binds` (`src:dst[:opts]`): an absolute source is a bind mount, resolved; another is a
/// named volume. Returns true when any bind mount is there.
fn rewrite_bind_specs(
    host: &mut Value,
    resolve_bind: &dyn Fn(&str, bool) -> Result<String, Refusal>,
    refs: &mut Refs,
) -> Result<bool, Refusal> {
    let mut any = false;
    let Some(binds) = host.get_mut("Binds").and_then(Value::as_array_mut) else {
        return Ok(any);
    };
    for bind in binds.iter_mut() {
        let Some(spec) = bind.as_str() else { continue };
        let (source, rest) = spec.split_once(':').unwrap_or((spec, ""));
        if source.starts_with('/') {
            let options = rest.split_once(':').map_or("", |(_, o)| o);
            let read_only = options.split(',').any(|o| o == "ro");
            let resolved = resolve_bind(source, read_only)?;
            *bind = Value::String(if rest.is_empty() {
                resolved
            } else {
                format!("{resolved}:{rest}")
            });
            any = true;
        } else if !rest.is_empty() {
            refs.volumes.push(source.to_string());
        }
    }
    Ok(any)
}

/// `Mounts`: binds resolved, volumes checked and named as refs, tmpfs as is, other types
/// refused. Returns true when any bind mount is there.
fn rewrite_mounts(
    host: &mut Value,
    scope: &Scope<'_>,
    resolve_bind: &dyn Fn(&str, bool) -> Result<String, Refusal>,
    refs: &mut Refs,
) -> Result<bool, Refusal> {
    let mut any = false;
    let Some(mounts) = host.get_mut("Mounts").and_then(Value::as_array_mut) else {
        return Ok(any);
    };
    for mount in mounts.iter_mut() {
        let kind = mount
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or("volume");
        let source = mount
            .get("Source")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind {
            "bind" => {
                let read_only = mount.get("ReadOnly").and_then(Value::as_bool) == Some(true);
                mount["Source"] = Value::String(resolve_bind(&source, read_only)?);
                any = true;
            }
            "volume" => {
                if let Some(options) = mount.pointer("/VolumeOptions/DriverConfig") {
                    volume_driver(options.get("Name"), options.get("Options"), scope)?;
                }
                if !source.is_empty() {
                    refs.volumes.push(source);
                }
            }
            "tmpfs" => {}
            other => {
                return Err(Refusal(format!(
                    "corral: mounts of type `{other}` are not allowed on the Docker socket of runner `{}`",
                    scope.runner
                )))
            }
        }
    }
    Ok(any)
}

/// A volume's driver and options: the `local` driver with options that do not mount a
/// host path or device (`type=tmpfs` is fine).
pub(super) fn volume_driver(
    driver: Option<&Value>,
    options: Option<&Value>,
    scope: &Scope<'_>,
) -> Result<(), Refusal> {
    let driver = driver.and_then(Value::as_str).unwrap_or("local");
    if !matches!(driver, "" | "local") {
        return Err(Refusal(format!(
            "corral: the volume driver `{driver}` is not allowed on the Docker socket of runner `{}`; use `local`",
            scope.runner
        )));
    }
    let options = options.and_then(Value::as_object);
    let get = |k: &str| {
        options
            .and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let binds = get("o")
        .split(',')
        .any(|o| o.trim() == "bind" || o.trim() == "rbind");
    let device = get("device");
    if binds || (!device.is_empty() && get("type") != "tmpfs") {
        return Err(Refusal(format!(
            "corral: a volume backed by a host path or device (`device={device}`) is not allowed \
             on the Docker socket of runner `{}`; bind-mount a path under its _work instead",
            scope.runner
        )));
    }
    Ok(())
}
