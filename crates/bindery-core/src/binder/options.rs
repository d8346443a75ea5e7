//! A binding's binder-specific options, parsed once by validation into the
//! binder's own type and handed to the binder as that type.

use std::any::{Any, type_name};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{BinderError, BinderErrorKind};

/// The section `[bindings.NAME.<type>]` of one binding, as the binder
/// type's own options struct
/// ([`BinderProvider::BindingOptions`](crate::registry::BinderProvider::BindingOptions)).
///
/// Validation parses the section once; a binder reads it with
/// [`get`](Self::get). A binding without the section carries no options
/// and the binder uses its defaults.
///
/// ```
/// use bindery_core::binder::BindingOptions;
///
/// #[derive(Clone, Debug, Default, PartialEq)]
/// struct Mine { quorum: bool }
///
/// let options = BindingOptions::new(Mine { quorum: true });
/// assert_eq!(options.get::<Mine>().unwrap(), Mine { quorum: true });
/// assert_eq!(BindingOptions::none().get::<Mine>().unwrap(), Mine::default());
/// ```
#[derive(Clone, Default)]
pub struct BindingOptions(Option<Arc<dyn Any + Send + Sync>>);

impl BindingOptions {
    /// No options: the binder's defaults.
    pub const fn none() -> Self {
        Self(None)
    }

    /// Options of type `T`.
    pub fn new<T: Any + Send + Sync>(options: T) -> Self {
        Self(Some(Arc::new(options)))
    }

    /// Options of type `T` read from a configuration section written as
    /// JSON (`null` is the defaults): what validation does for a binding,
    /// for tests and programs that build specs by hand.
    pub fn parse<T>(section: serde_json::Value) -> Result<Self, BinderError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        Ok(Self::new(crate::registry::parse_options::<T>(&section)?))
    }

    /// The options as `T`, or `T::default()` when there are none. Fails
    /// when they are of another type: options meant for another binder
    /// type reached this one.
    pub fn get<T: Any + Clone + Default>(&self) -> Result<T, BinderError> {
        match &self.0 {
            None => Ok(T::default()),
            Some(options) => options.downcast_ref::<T>().cloned().ok_or_else(|| {
                BinderError::new(
                    BinderErrorKind::InvalidOptions,
                    format!("binding options are not {}", type_name::<T>()),
                )
            }),
        }
    }

    /// Whether the binding has options of its own.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for BindingOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The options may hold credentials; only say whether there are any.
        f.write_str(if self.0.is_some() {
            "BindingOptions(..)"
        } else {
            "BindingOptions(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Mine(u32);

    #[derive(Clone, Debug, Default)]
    struct Theirs;

    #[test]
    fn options_of_another_type_are_an_error_not_defaults() {
        let error = BindingOptions::new(Theirs).get::<Mine>().unwrap_err();
        assert_eq!(error.kind(), BinderErrorKind::InvalidOptions);
        assert!(error.to_string().contains("Mine"), "{error}");
    }

    #[test]
    fn debug_never_shows_the_values() {
        assert_eq!(
            format!("{:?}", BindingOptions::new(Mine(7))),
            "BindingOptions(..)"
        );
    }
}
