//! Configuration: loading ([`load`](mod@load)), the typed model ([`model`]), and
//! validation into a [`Wiring`] ([`validate`](mod@validate)).
//!
//! TOML is the default; YAML is read from `.yaml`/`.yml` files. Keys follow
//! Spring Cloud Stream's names in kebab-case. See [`load`](mod@load) for environment
//! overrides and `${VAR}` secrets.

pub mod duration;
mod introspect;
pub mod load;
pub mod model;
mod problem;
pub mod section;
pub mod validate;
pub mod wiring;

pub use introspect::field_names;
pub use load::{ConfigSource, Format, RawConfig, load};
pub use model::{AppSettings, BindingSettings, ConsumerSettings, PollerSettings, ProducerSettings};
pub use problem::{Problem, Problems, did_you_mean, suggestion};
pub use validate::{Catalog, validate};
pub use wiring::{BinderPlan, FunctionPlan, InputPlan, OutputPlan, Wiring};
