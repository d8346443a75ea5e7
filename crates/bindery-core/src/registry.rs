//! Registration without life-before-main: binder crates and the
//! `#[bindery::function]` macro add entries to these linkme slices, and the
//! runtime reads them at start-up.

use std::fmt;
use std::sync::Arc;

use linkme::distributed_slice;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::binder::{Binder, BindingOptions, Capabilities};
use crate::config::Problem;
use crate::config::section::read_section;
use crate::error::BinderError;
use crate::function::FunctionRegistry;

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
    /// What binders of this type can do, known before one exists.
    pub capabilities: Capabilities,
    /// Checks `[binders.NAME]` (without `type`), adding problems.
    pub check_settings: fn(&Value, &str, &mut Vec<Problem>),
    /// Checks `[bindings.NAME.<type>]`, adding problems, and returns the
    /// section parsed into the type's options when it has none.
    pub check_binding_options: fn(&Value, &str, &mut Vec<Problem>) -> Option<BindingOptions>,
    /// How long the broker lets a consumer hold one delivery, from checked
    /// binder settings and binding options; see
    /// [`BinderProvider::delivery_patience`].
    pub delivery_patience: fn(&Value, &BindingOptions) -> Option<Patience>,
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
    /// The `type` value, such as `memory`.
    const TYPE: &'static str;
    /// What binders of this type can do. Validation reads it before any
    /// binder exists; [`Binder::capabilities`] reports the same.
    const CAPABILITIES: Capabilities;
    /// `[binders.NAME]` without `type`; all fields need defaults.
    type Settings: DeserializeOwned;
    /// `[bindings.NAME.<type>]`; all fields need defaults. Validation
    /// parses it once and the binder reads it from the spec's
    /// [`BindingOptions`].
    type BindingOptions: DeserializeOwned + Clone + Default + Send + Sync + 'static;

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
    /// What sets it, for the warning: "the broker's consumer_timeout".
    pub source: &'static str,
}

impl BinderFactory {
    /// The factory of provider `P`.
    pub const fn of<P: BinderProvider>() -> Self {
        Self {
            binder_type: P::TYPE,
            capabilities: P::CAPABILITIES,
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
) -> Option<BindingOptions> {
    let before = problems.len();
    let options = read_section::<P::BindingOptions>(Some(value), path, problems)?;
    P::check_binding_options(&options, path, problems);
    (problems.len() == before).then(|| BindingOptions::new(options))
}

fn delivery_patience<P: BinderProvider>(
    settings: &Value,
    options: &BindingOptions,
) -> Option<Patience> {
    let settings = parse_options::<P::Settings>(settings).ok()?;
    let options = options.get::<P::BindingOptions>().ok()?;
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

/// Registers binder type `$provider` (a [`BinderProvider`]) in
/// [`BINDER_FACTORIES`], so `[binders.NAME] type = "..."` finds it, and
/// defines `pub fn link()`, which an application calls (or the facade calls
/// for it) so the linker keeps the registration of a crate it otherwise
/// never references.
///
/// In a binder crate's `lib.rs`, with `NatsProvider: BinderProvider`:
///
/// ```text
/// bindery_core::register_binder!(NatsProvider);
/// ```
///
/// Without linkme, register a type with `AppBuilder::binder_type::<P>()`.
#[macro_export]
macro_rules! register_binder {
    ($provider:ty) => {
        #[$crate::__private::linkme::distributed_slice($crate::__private::BINDER_FACTORIES)]
        #[linkme(crate = $crate::__private::linkme)]
        static REGISTERED_BINDER: $crate::__private::BinderFactory =
            $crate::__private::BinderFactory::of::<$provider>();

        /// Keeps this crate's binder registration in the final program
        /// (see `bindery_core::register_binder!`).
        pub fn link() {
            ::std::hint::black_box(&REGISTERED_BINDER);
        }
    };
}

/// Every binder factory linked into the program.
pub fn binder_factories() -> &'static [BinderFactory] {
    &BINDER_FACTORIES
}

/// Every function registered with the macro.
pub fn registered_functions() -> &'static [FunctionEntry] {
    &FUNCTIONS
}
