//! Which Docker Engine API call a request is (API 1.41 and the versions clients negotiate),
//! from its method and path alone. Pure: no I/O.
//!
//! Anything not named here is [`Route::Unknown`] and refused: a new engine endpoint stays
//! closed until someone decides what a job may do with it.

use http::Method;

/// One call of the Engine API, with the object it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `_ping`, `version`, `info`, `auth`, `distribution/…`, `images/search`: nothing of
    /// another runner's in them.
    Pass,
    /// `GET /events`: filtered to the runner's objects.
    Events,
    /// `GET /containers/json`.
    ContainerList,
    /// `POST /containers/create`.
    ContainerCreate,
    /// `POST /containers/prune`.
    ContainerPrune,
    /// `/containers/{id}/{action}`; `action` is empty for `DELETE /containers/{id}`.
    Container {
        /// Name or id as given.
        id: String,
        /// `json`, `start`, `exec`, `attach`, …
        action: String,
    },
    /// `/exec/{id}/{action}`: `start`, `resize`, `json`.
    Exec {
        /// Exec id.
        id: String,
    },
    /// `GET /images/json`.
    ImageList,
    /// `POST /build`.
    Build,
    /// `POST /build/prune`: the engine's build cache (shared, not labelled).
    BuildPrune,
    /// `POST /images/create`: pull or import.
    ImageCreate,
    /// `POST /images/load`.
    ImageLoad,
    /// `GET /images/get`: export of several images.
    ImageExport,
    /// `POST /images/prune`.
    ImagePrune,
    /// `POST /commit`.
    Commit,
    /// `/images/{name}/{action}`; `action` is empty for `DELETE /images/{name}`.
    Image {
        /// Name, reference or id as given.
        name: String,
        /// `json`, `history`, `tag`, `push`, `get`.
        action: String,
    },
    /// `GET /networks`.
    NetworkList,
    /// `POST /networks/create`.
    NetworkCreate,
    /// `POST /networks/prune`.
    NetworkPrune,
    /// `/networks/{id}[/connect|/disconnect]`.
    Network {
        /// Name or id as given.
        id: String,
        /// `connect`, `disconnect`, or empty (inspect, delete).
        action: String,
    },
    /// `GET /volumes`.
    VolumeList,
    /// `POST /volumes/create`.
    VolumeCreate,
    /// `POST /volumes/prune`.
    VolumePrune,
    /// `/volumes/{name}`: inspect or delete.
    Volume {
        /// Volume name.
        name: String,
    },
    /// `POST /session`: `BuildKit`'s hijacked session, tied to a build of the same client.
    Session,
    /// Host-wide calls no job needs: swarm, services, nodes, secrets, configs, tasks,
    /// plugins (installing one is root on the host), `system/df`.
    Refused(&'static str),
    /// Looked up by `docker inspect` among other kinds: answered "not found", as an engine
    /// without it would.
    Hidden,
    /// Anything else.
    Unknown,
}

/// The route of `method` `path` (the path without its query).
pub fn route(method: &Method, path: &str) -> Route {
    let path = strip_version(path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match segments.as_slice() {
        ["_ping" | "version" | "info"] => Route::Pass,
        ["auth"] if post => Route::Pass,
        ["distribution", ..] | ["images", "search"] if get => Route::Pass,
        ["events"] if get => Route::Events,
        ["containers", "json"] if get => Route::ContainerList,
        ["containers", "create"] if post => Route::ContainerCreate,
        ["containers", "prune"] if post => Route::ContainerPrune,
        ["containers", id] if method == Method::DELETE => Route::Container {
            id: decode(id),
            action: String::new(),
        },
        ["containers", id, action] => Route::Container {
            id: decode(id),
            action: (*action).to_string(),
        },
        ["exec", id, "start" | "resize" | "json"] => Route::Exec { id: decode(id) },
        ["images", "json"] if get => Route::ImageList,
        ["images", "create"] if post => Route::ImageCreate,
        ["images", "load"] if post => Route::ImageLoad,
        ["images", "get"] if get => Route::ImageExport,
        ["images", "prune"] if post => Route::ImagePrune,
        ["images", rest @ ..] if !rest.is_empty() => image_route(method, rest),
        ["build"] if post => Route::Build,
        ["build", "prune"] if post => Route::BuildPrune,
        ["commit"] if post => Route::Commit,
        ["session"] if post => Route::Session,
        ["networks"] if get => Route::NetworkList,
        ["networks", "create"] if post => Route::NetworkCreate,
        ["networks", "prune"] if post => Route::NetworkPrune,
        ["networks", id] => Route::Network {
            id: decode(id),
            action: String::new(),
        },
        ["networks", id, action @ ("connect" | "disconnect")] if post => Route::Network {
            id: decode(id),
            action: (*action).to_string(),
        },
        ["volumes"] if get => Route::VolumeList,
        ["volumes", "create"] if post => Route::VolumeCreate,
        ["volumes", "prune"] if post => Route::VolumePrune,
        ["volumes", name] => Route::Volume { name: decode(name) },
        ["swarm" | "services" | "nodes" | "tasks" | "secrets" | "configs", ..] => {
            Route::Refused("swarm mode is host-wide")
        }
        ["plugins", _, "json"] if get => Route::Hidden,
        ["plugins", ..] => Route::Refused("plugins run as root on the host"),
        ["system", "df"] => Route::Refused("`system df` shows every runner's objects"),
        _ => Route::Unknown,
    }
}

/// `/images/{name}/{action}`: a name may hold slashes (`registry:5000/team/app:1`), so the
/// action is the last segment when it is one, and the rest is the name.
fn image_route(method: &Method, rest: &[&str]) -> Route {
    let (last, name) = rest.split_last().map_or(("", &[][..]), |(l, n)| (*l, n));
    let known = ["json", "history", "tag", "push", "get"];
    if method != Method::DELETE && known.contains(&last) && !name.is_empty() {
        return Route::Image {
            name: decode(&name.join("/")),
            action: last.to_string(),
        };
    }
    if method == Method::DELETE {
        return Route::Image {
            name: decode(&rest.join("/")),
            action: String::new(),
        };
    }
    Route::Unknown
}

/// The path without a leading `/v1.41`.
pub fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return &rest[end..];
        }
    }
    path
}

/// A path segment with `%XX` escapes decoded.
fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        clippy::needless_pass_by_value,
        reason = "the table reads better with `Method::GET` than `&Method::GET`"
    )]
    fn r(method: Method, path: &str) -> Route {
        route(&method, path)
    }

    #[test]
    fn routes_of_the_calls_docker_makes() {
        assert_eq!(r(Method::HEAD, "/_ping"), Route::Pass);
        assert_eq!(
            r(Method::POST, "/v1.41/containers/create"),
            Route::ContainerCreate
        );
        assert_eq!(
            r(Method::POST, "/v1.41/containers/abc/attach"),
            Route::Container {
                id: "abc".into(),
                action: "attach".into()
            }
        );
        assert_eq!(
            r(Method::DELETE, "/v1.41/containers/abc"),
            Route::Container {
                id: "abc".into(),
                action: String::new()
            }
        );
        assert_eq!(
            r(Method::GET, "/v1.41/images/reg:5000/team/app:1/json"),
            Route::Image {
                name: "reg:5000/team/app:1".into(),
                action: "json".into()
            }
        );
        assert_eq!(
            r(Method::DELETE, "/v1.41/images/team/app:1"),
            Route::Image {
                name: "team/app:1".into(),
                action: String::new()
            }
        );
        assert_eq!(
            r(Method::POST, "/v1.41/exec/e1/start"),
            Route::Exec { id: "e1".into() }
        );
        assert_eq!(r(Method::POST, "/v1.41/build"), Route::Build);
        assert_eq!(
            r(Method::POST, "/v1.41/networks/n1/connect"),
            Route::Network {
                id: "n1".into(),
                action: "connect".into()
            }
        );
        assert!(matches!(
            r(Method::POST, "/v1.41/plugins/pull"),
            Route::Refused(_)
        ));
        assert_eq!(r(Method::POST, "/v1.41/grpc"), Route::Unknown);
        assert_eq!(
            r(Method::GET, "/v1.41/volumes/a%2Fb"),
            Route::Volume { name: "a/b".into() }
        );
    }

    #[test]
    fn version_prefix() {
        assert_eq!(strip_version("/v1.41/info"), "/info");
        assert_eq!(strip_version("/info"), "/info");
        assert_eq!(strip_version("/volumes/x"), "/volumes/x");
    }
}
