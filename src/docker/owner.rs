//! Whose an object is: the checks the proxy makes against the engine before a request
//! that names containers, networks, volumes or images goes on. An object is a runner's when
//! its `corral.runner` label says so; images without the label are shared.

use http::Method;
use serde_json::Value;

use super::engine::segment;
use super::policy::{self, owner_of, Refs, Refusal, Scope};
use super::proxy::{Denied, RunnerProxy};

impl RunnerProxy {
    /// The objects a request names, each this runner's (images: or shared). Missing named
    /// volumes are created with this runner's labels first, so the engine does not make
    /// them unlabelled.
    pub(super) async fn check_refs(&self, scope: &Scope<'_>, refs: &Refs) -> Result<(), Denied> {
        for id in &refs.containers {
            if self.own_container(id).await?.is_none() {
                return Err(Denied::NotFound(format!("No such container: {id}")));
            }
        }
        for id in &refs.networks {
            let network = self
                .engine
                .get(&format!("/networks/{}", segment(id)))
                .await?;
            if network.as_ref().and_then(|n| owner_of(n.get("Labels"))) != Some(&self.name) {
                return Err(Denied::NotFound(format!("network {id} not found")));
            }
        }
        for name in &refs.volumes {
            match self
                .engine
                .get(&format!("/volumes/{}", segment(name)))
                .await?
            {
                Some(volume) if owner_of(volume.get("Labels")) == Some(&self.name) => {}
                Some(_) => return Err(Denied::NotFound(format!("no such volume: {name}"))),
                None => {
                    let mut body = serde_json::json!({ "Name": name });
                    policy::volume_create(&mut body, scope)?;
                    self.engine
                        .call(Method::POST, "/volumes/create", Some(&body))
                        .await?;
                }
            }
        }
        for image in &refs.images {
            self.visible_image(image).await?;
        }
        for tag in &refs.tags {
            self.tag_free(tag).await?;
        }
        Ok(())
    }

    /// The container `id` when it is this runner's.
    pub(super) async fn own_container(&self, id: &str) -> Result<Option<Value>, Denied> {
        if id.is_empty() {
            return Ok(None);
        }
        let container = self
            .engine
            .get(&format!("/containers/{}/json", segment(id)))
            .await?;
        Ok(container.filter(|c| owner_of(c.pointer("/Config/Labels")) == Some(&self.name)))
    }

    pub(super) async fn owns_container(&self, id: &str) -> Result<bool, Denied> {
        Ok(self.own_container(id).await?.is_some())
    }

    pub(super) async fn owned_volume(&self, name: &str) -> Result<(), Denied> {
        let volume = self
            .engine
            .get(&format!("/volumes/{}", segment(name)))
            .await?;
        if volume.as_ref().and_then(|v| owner_of(v.get("Labels"))) != Some(&self.name) {
            return Err(Denied::NotFound(format!("get {name}: no such volume")));
        }
        Ok(())
    }

    /// The image `name` unless another runner's: its owner (this runner), or `None` when
    /// shared. A missing image is left for the engine to report.
    pub(super) async fn visible_image(&self, name: &str) -> Result<Option<String>, Denied> {
        let image = self
            .engine
            .get(&format!("/images/{}/json", segment(name)))
            .await?;
        match image
            .as_ref()
            .and_then(|i| owner_of(i.pointer("/Config/Labels")))
        {
            Some(owner) if owner == self.name => Ok(Some(owner.to_string())),
            Some(_) => Err(Denied::NotFound(format!("No such image: {name}"))),
            None => Ok(None),
        }
    }

    /// A name the job writes (a tag) must not take another runner's image's name.
    pub(super) async fn tag_free(&self, name: &str) -> Result<(), Denied> {
        let image = self
            .engine
            .get(&format!("/images/{}/json", segment(name)))
            .await?;
        match image
            .as_ref()
            .and_then(|i| owner_of(i.pointer("/Config/Labels")))
        {
            Some(owner) if owner != self.name => Err(Denied::Refused(Refusal(format!(
                "corral: the image name `{name}` belongs to another runner's image"
            )))),
            _ => Ok(()),
        }
    }
}
