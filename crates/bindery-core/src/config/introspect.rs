//! Field names of a config struct, read from its `Deserialize` impl, so
//! typo suggestions never drift from the real keys.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The serialized field names of struct `T` (empty for non-structs).
pub fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(Introspector(&mut fields));
    fields.unwrap_or_default()
}

struct Introspector<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for Introspector<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("introspection only"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("introspection only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}
