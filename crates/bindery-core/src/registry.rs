//! Registration without life-before-main: binder crates and the
//! `#[bindery::function]` macro add entries to these linkme slices, and the
//! runtime reads them at start-up.

use std::fmt;
use std::sync::Arc;

use linkme::distributed_slice;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::binder::Binder;
use crate::config::Problem;
use crate::config::section::read_section;
use crate::error::BinderError;
use crate::function::FunctionRegistry;

/// Binder types bindery knows of, with the facade feature that links each.
pub const KNOWN_BINDER_TYPES: [(&str, &str); 3] = [
    ("memory", "memory"),
    ("rabbitmq", "rabbitmq"),
    ("kafka", "kafka"),
];

/// Every binder linked into the program.
#[distributed_slice]
pub static BINDER_FACTORIES: [BinderFactory];

/// Every function registered with `#[bindery::function]`.
#[distributed_slice]
pub static FUNCTIONS: [FunctionEntry];

/// A binder type's configuration schema and constructor.
///
/// Build one with [`BinderFactory::of`] from a [`BinderProvider`].
#[derive(Clone, Copy)]
pub struct BinderFactory {
    /// The `type` value this factory serves.
    pub binder_type: &'static str,
    /// Checks `[binders.NAME]` (without `type`), adding problems.
    pub check_settings: fn(&Value, &str, &mut Vec<Problem>),
    /// Checks `[bindings.NAME.<type>]`, adding problems.
    pub check_binding_options: fn(&Value, &str, &mut Vec<Problem>),
    /// How long the broker lets a consumer hold one delivery, from checked
    /// binder settings and binding options; see
    /// [`BinderProvider::delivery_patience`].
    pub delivery_patience: fn(&Value, &Value) -> Option<Patience>,
    /// Creates a binder named `name` from checked settings. It must not
    /// connect yet: a broker that is down must not stop the app.
    pub create: CreateBinder,
}

/// Creates a binder named by the first argument from checked settings.
pub type CreateBinder = fn(&str, &Value) -> Result<Arc<dyn Binder>, BinderError>;

impl fmt::Debug for BinderFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinderFactory")
            .field("binder_type", &self.binder_type)
            .finish_non_exhaustive()
    }
}

/// What a binder crate implements to register its type.
pub trait BinderProvider: 'static {
    /// The `type` value, such as `rabbitmq`.
    const TYPE: &'static str;
    /// `[binders.NAME]` without `type`; all fields need defaults.
    type Settings: DeserializeOwned;
    /// `[bindings.NAME.<type>]`; all fields need defaults.
    type BindingOptions: DeserializeOwned;

    /// Creates the binder; it connects lazily or in the background.
    fn create(name: &str, settings: Self::Settings) -> Result<Arc<dyn Binder>, BinderError>;

    /// Checks that need more than types (URIs, ranges); adds problems.
    fn check_settings(settings: &Self::Settings, path: &str, problems: &mut Vec<Problem>) {
        let _ = (settings, path, problems);
    }

    /// Checks binding options beyond their types; adds problems.
    fn check_binding_options(
        options: &Self::BindingOptions,
        path: &str,
        problems: &mut Vec<Problem>,
    ) {
        let _ = (options, path, problems);
    }

    /// How long the broker lets a consumer hold one unacknowledged delivery
    /// before it takes the delivery back (a consumer timeout, a poll
    /// interval). Validation warns when a binding's worst-case in-process
    /// back-off is longer, since the message would then be redelivered and
    /// start its attempts again instead of reaching the dead-letter
    /// destination. Default: no limit.
    fn delivery_patience(
        settings: &Self::Settings,
        options: &Self::BindingOptions,
    ) -> Option<Patience> {
        let _ = (settings, options);
        None
    }
}

/// A broker's limit on how long one delivery may stay unacknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    /// The limit.
    pub limit: std::time::Duration,
    /// What sets it, for the warning: "RabbitMQ's consumer_timeout".
    pub source: &'static str,
}

impl BinderFactory {
    /// The factory of provider `P`.
    pub const fn of<P: BinderProvider>() -> Self {
        Self {
            binder_type: P::TYPE,
            check_settings: check_settings::<P>,
            check_binding_options: check_binding_options::<P>,
            delivery_patience: delivery_patience::<P>,
            create: create::<P>,
        }
    }
}

fn check_settings<P: BinderProvider>(value: &Value, path: &str, problems: &mut Vec<Problem>) {
    if let Some(settings) = read_section::<P::Settings>(Some(value), path, problems) {
        P::check_settings(&settings, path, problems);
    }
}

fn check_binding_options<P: BinderProvider>(
    value: &Value,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    if let Some(options) = read_section::<P::BindingOptions>(Some(value), path, problems) {
        P::check_binding_options(&options, path, problems);
    }
}

fn delivery_patience<P: BinderProvider>(settings: &Value, options: &Value) -> Option<Patience> {
    let settings = parse_options::<P::Settings>(settings).ok()?;
    let options = parse_options::<P::BindingOptions>(options).ok()?;
    P::delivery_patience(&settings, &options)
}

fn create<P: BinderProvider>(name: &str, value: &Value) -> Result<Arc<dyn Binder>, BinderError> {
    let settings = parse_options::<P::Settings>(value)?;
    P::create(name, settings)
}

/// Reads binder options that validation already checked (`Null` = defaults).
pub fn parse_options<T: DeserializeOwned>(value: &Value) -> Result<T, BinderError> {
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value.clone()
    };
    serde_json::from_value(value)
        .map_err(|e| BinderError::new(crate::error::BinderErrorKind::InvalidOptions, e.to_string()))
}

/// A function registered by `#[bindery::function]`.
#[derive(Clone, Copy)]
pub struct FunctionEntry {
    /// The function's name in `definition`.
    pub name: &'static str,
    /// Adds the function to a registry.
    pub register: fn(&mut FunctionRegistry),
    /// Where it is declared (`file:line`), for duplicate-name errors.
    pub location: &'static str,
}

impl fmt::Debug for FunctionEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionEntry")
            .field("name", &self.name)
            .field("location", &self.location)
            .finish()
    }
}

/// Every binder factory linked into the program.
pub fn binder_factories() -> &'static [BinderFactory] {
    &BINDER_FACTORIES
}

/// Every function registered with the macro.
pub fn registered_functions() -> &'static [FunctionEntry] {
    &FUNCTIONS
}
