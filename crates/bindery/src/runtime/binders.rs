//! The binder instances of one app, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use bindery_core::binder::{Binder, Health};
use bindery_core::config::Wiring;
use bindery_core::error::{BinderError, BinderErrorKind, Error};
use bindery_core::registry::BinderFactory;

/// Binders by the name they have in `[binders.NAME]`.
#[derive(Debug, Default)]
pub(crate) struct Binders {
    by_name: BTreeMap<String, Arc<dyn Binder>>,
}

impl Binders {
    /// Creates every binder of `wiring`, using `provided` instances where
    /// the program supplied them and the first of `factories` of its type
    /// otherwise. Nothing connects yet.
    pub(crate) fn create(
        wiring: &Wiring,
        provided: &BTreeMap<String, Arc<dyn Binder>>,
        factories: &[BinderFactory],
    ) -> Result<Self, Error> {
        let mut by_name = BTreeMap::new();
        for plan in &wiring.binders {
            let binder = match provided.get(&plan.name) {
                Some(binder) => binder.clone(),
                None => {
                    let factory = factories
                        .iter()
                        .find(|f| f.binder_type == plan.binder_type)
                        .ok_or_else(|| {
                            BinderError::new(
                                BinderErrorKind::InvalidOptions,
                                format!("binder type `{}` is not linked", plan.binder_type),
                            )
                        })?;
                    (factory.create)(&plan.name, &plan.settings)?
                }
            };
            by_name.insert(plan.name.clone(), binder);
        }
        Ok(Self { by_name })
    }

    pub(crate) fn get(&self, name: &str) -> Result<Arc<dyn Binder>, BinderError> {
        self.by_name.get(name).cloned().ok_or_else(|| {
            BinderError::new(
                BinderErrorKind::InvalidOptions,
                format!("binder `{name}` is not declared"),
            )
        })
    }

    /// Down binders with their reasons; empty when all are up.
    pub(crate) fn health(&self) -> Vec<(String, Health)> {
        self.by_name
            .iter()
            .map(|(name, binder)| (name.clone(), binder.health()))
            .filter(|(_, health)| !health.is_up())
            .collect()
    }

    pub(crate) async fn shutdown(&self) {
        for (name, binder) in &self.by_name {
            if let Err(e) = binder.shutdown().await {
                tracing::warn!("binder `{name}` did not shut down cleanly: {e:#}");
            }
        }
    }
}
