//! `#[bindery::function]`: registers an async function with bindery.
//!
//! The function is left exactly as written; beside it the macro emits a
//! linkme registration, so `App::from_env()` finds it without a list kept
//! by hand. The same function works without the macro through
//! `App::builder().function("name", f)`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::{Error, FnArg, ItemFn, LitStr, Token, parse_macro_input};

/// Registers an async function as a bindery function.
///
/// ```
/// use bindery::prelude::*;
///
/// #[derive(Serialize, Deserialize)]
/// struct Order { id: u64 }
///
/// #[bindery::function]
/// async fn uppercase(text: String) -> String {
///     text.to_uppercase()
/// }
///
/// #[bindery::function(name = "audit-log")]
/// async fn audit(order: Order, headers: Headers) {
///     println!("order {} ({} headers)", order.id, headers.len());
/// }
/// # fn main() {}
/// ```
///
/// The name used in `definition` and in binding names is the function's
/// name unless `name = "..."` says otherwise.
#[proc_macro_attribute]
pub fn function(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as Args);
    let function = parse_macro_input!(item as ItemFn);
    expand(args, function)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// `name = "..."`, or nothing.
struct Args {
    name: Option<LitStr>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Ok(Args { name: None });
        }
        let key: syn::Ident = input.parse()?;
        if key != "name" {
            return Err(Error::new(
                key.span(),
                "unknown argument; the only argument is `name = \"...\"`",
            ));
        }
        input.parse::<Token![=]>()?;
        let name: LitStr = input.parse()?;
        if name.value().trim().is_empty() {
            return Err(Error::new(name.span(), "the function name cannot be empty"));
        }
        if name.value().contains(['|', ';']) {
            return Err(Error::new(
                name.span(),
                "a function name cannot contain `|` or `;`, which separate functions in `definition`",
            ));
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after `name = \"...\"`"));
        }
        Ok(Args { name: Some(name) })
    }
}

fn expand(args: Args, function: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let signature = &function.sig;
    if signature.asyncness.is_none() {
        return Err(Error::new_spanned(
            signature.fn_token,
            "bindery functions must be `async fn`",
        ));
    }
    if let Some(param) = signature.generics.params.first() {
        return Err(Error::new_spanned(
            param,
            "bindery functions cannot be generic: the framework must know the payload type to decode it",
        ));
    }
    if let Some(FnArg::Receiver(receiver)) = signature.inputs.first() {
        return Err(Error::new_spanned(
            receiver,
            "bindery functions cannot take `self`; share data through `State<T>` instead",
        ));
    }
    if let Some(variadic) = &signature.variadic {
        return Err(Error::new_spanned(
            variadic,
            "bindery functions cannot be variadic",
        ));
    }
    let ident = &signature.ident;
    let name = args.name.unwrap_or_else(|| {
        LitStr::new(
            ident.to_string().trim_start_matches("r#"),
            Span::call_site(),
        )
    });
    let registration = format_ident!(
        "__BINDERY_FUNCTION_{}",
        ident.to_string().trim_start_matches("r#").to_uppercase()
    );
    Ok(quote! {
        #function

        #[::bindery::__private::linkme::distributed_slice(::bindery::__private::FUNCTIONS)]
        #[linkme(crate = ::bindery::__private::linkme)]
        #[doc(hidden)]
        static #registration: ::bindery::__private::FunctionEntry = ::bindery::__private::FunctionEntry {
            name: #name,
            register: |registry: &mut ::bindery::__private::FunctionRegistry| registry.add(#name, #ident),
            location: ::core::concat!(::core::file!(), ":", ::core::line!()),
        };
    })
}
