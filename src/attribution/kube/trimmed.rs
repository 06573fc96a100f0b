//! The watches' object type: each object of a list or watch event is read on its own (as a
//! JSON value, then into its k8s-openapi type), trimmed to netsonde's facts at once, and
//! dropped. A list
//! of 10 000 pods is then held as 10 000 trimmed facts, never as 10 000 API objects (or JSON
//! trees) at the same time, and one malformed object spoils only itself.

use std::{borrow::Cow, fmt::Debug};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use super::meta::MetaError;

/// How one kind of API object becomes its facts (implemented by marker types: a pod is
/// trimmed one way on this node and another across the cluster).
pub trait Trim: Clone + Debug + Send + Sync + 'static {
    type Api: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta> + DeserializeOwned;
    type Facts: Clone + Debug + Send + Sync + 'static;
    fn trim(object: &Self::Api) -> Result<Self::Facts, MetaError>;
}

/// An object as a watch delivers it: the metadata the watcher itself needs (name, namespace,
/// resource version) and the trimmed facts, or why there are none.
#[derive(Debug, Clone)]
pub struct Trimmed<T: Trim> {
    metadata: ObjectMeta,
    pub facts: Result<T::Facts, String>,
}

#[derive(Deserialize)]
struct MetadataOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

impl<'de, T: Trim> Deserialize<'de> for Trimmed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A value, not raw JSON text: watch events reach here through serde's buffered
        // (adjacently tagged) enum content, which only a value can be read from.
        let value = serde_json::Value::deserialize(deserializer)?;
        let typed = T::Api::deserialize(&value);
        let metadata = match &typed {
            Ok(object) => k8s_openapi::Metadata::metadata(object).clone(),
            // Malformed: what the watcher needs may still be readable.
            Err(_) => MetadataOnly::deserialize(&value)
                .map(|m| m.metadata)
                .unwrap_or_default(),
        };
        drop(value);
        let facts = typed
            .map_err(|e| e.to_string())
            .and_then(|object| T::trim(&object).map_err(|e| e.to_string()));
        Ok(Trimmed {
            metadata: slim(metadata),
            facts,
        })
    }
}

/// Only what the watcher reads (and what names an object in a message).
fn slim(meta: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        ..ObjectMeta::default()
    }
}

/// Requests for `Trimmed<T>` are those for `T::Api`.
impl<T: Trim> kube::Resource for Trimmed<T> {
    type DynamicType = ();
    type Scope = <T::Api as k8s_openapi::Resource>::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        <T::Api as k8s_openapi::Resource>::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        <T::Api as k8s_openapi::Resource>::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        <T::Api as k8s_openapi::Resource>::VERSION.into()
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        <T::Api as k8s_openapi::Resource>::API_VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        <T::Api as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::kube::watch::Services;

    #[test]
    fn each_object_is_read_on_its_own() {
        let list = r#"[
            {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                          "managedFields": [{"manager": "x"}], "annotations": {"a": "b"}},
             "spec": {"clusterIP": "10.96.0.9"}},
            {"metadata": {"name": "bad", "namespace": "shop", "resourceVersion": "8"},
             "spec": {"clusterIP": 12}},
            {"metadata": {"namespace": "shop", "resourceVersion": "9"}}
        ]"#;
        let items: Vec<Trimmed<Services>> = serde_json::from_str(list).unwrap();
        let web = items[0].facts.as_ref().unwrap();
        assert_eq!(&*web.name, "web");
        assert_eq!(
            web.cluster_ips,
            ["10.96.0.9".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(items[0].metadata.managed_fields.is_none(), "slimmed");
        assert!(items[0].metadata.annotations.is_none());
        let bad = items[1].facts.as_ref().unwrap_err();
        assert!(bad.contains("invalid type"), "{bad}");
        assert_eq!(items[1].metadata.resource_version.as_deref(), Some("8"));
        assert_eq!(
            items[2].facts.as_ref().unwrap_err(),
            "Service without metadata.name"
        );
    }
}
