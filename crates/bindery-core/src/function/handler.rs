//! `Handler`: implemented for async functions of up to twelve arguments.

use std::future::Future;
use std::marker::PhantomData;

use futures::future::BoxFuture;

use super::extract::{FromMessage, Input};
use super::outcome::{IntoOutcome, Outcome};
use super::{Function, FunctionKind};
use crate::codec::Codec;
use crate::error::FunctionError;

/// An async function usable as a bindery function.
///
/// Implemented for `Fn(T1, .., Tn) -> impl Future<Output = O>` where every
/// `Ti` is an extractor ([`FromMessage`]) and `O` an [`IntoOutcome`]. `M`
/// only keeps the implementations apart. A function none of whose
/// arguments come from the message (none at all, or only `State<T>` and
/// `Sender`) is a source.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a bindery function",
    label = "not an async fn with extractor arguments and a supported return type",
    note = "a bindery function is an `async fn` (or closure returning a `Send` future) whose arguments are extractors (the payload `T: Deserialize`, `Message<T>`, `Headers`, `Key`, `RoutingKey`, `Attempt`, `State<T>`, `Sender`) and which returns `T: Serialize`, `Option<T>`, `Message<T>`, `()`, a `Stream`, or a `Result` of those"
)]
pub trait Handler<M>: Clone + Send + Sync + 'static {
    /// Source, processor or sink, from the signature.
    fn kind(&self) -> FunctionKind;

    /// Extracts the arguments from `input`, calls the function and converts
    /// its output.
    fn call(
        &self,
        input: &Input<'_>,
        output: Codec,
    ) -> BoxFuture<'static, Result<Outcome, FunctionError>>;
}

impl<F, Fut, O, MO> Handler<(MO,)> for F
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
    O: IntoOutcome<MO>,
    MO: 'static,
{
    fn kind(&self) -> FunctionKind {
        FunctionKind::Source
    }

    fn call(
        &self,
        _input: &Input<'_>,
        output: Codec,
    ) -> BoxFuture<'static, Result<Outcome, FunctionError>> {
        let future = self();
        Box::pin(async move { future.await.into_outcome(output) })
    }
}

macro_rules! impl_handler {
    ($($arg:ident $marker:ident),+) => {
        impl<F, Fut, O, MO, $($arg, $marker,)+> Handler<(MO, $(($marker, $arg),)+)> for F
        where
            F: Fn($($arg),+) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = O> + Send + 'static,
            O: IntoOutcome<MO>,
            MO: 'static,
            $($arg: FromMessage<$marker>, $marker: 'static,)+
        {
            fn kind(&self) -> FunctionKind {
                let takes_messages = false $(|| <$arg as FromMessage<$marker>>::FROM_MESSAGE)+;
                if !takes_messages {
                    FunctionKind::Source
                } else if O::produces_output() {
                    FunctionKind::Processor
                } else {
                    FunctionKind::Sink
                }
            }

            fn call(
                &self,
                input: &Input<'_>,
                output: Codec,
            ) -> BoxFuture<'static, Result<Outcome, FunctionError>> {
                $(
                    #[allow(non_snake_case)]
                    let $arg = match $arg::from_message(input) {
                        Ok(value) => value,
                        Err(error) => return Box::pin(std::future::ready(Err(error))),
                    };
                )+
                let future = self($($arg),+);
                Box::pin(async move { future.await.into_outcome(output) })
            }
        }
    };
}

impl_handler!(T1 M1);
impl_handler!(T1 M1, T2 M2);
impl_handler!(T1 M1, T2 M2, T3 M3);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7, T8 M8);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7, T8 M8, T9 M9);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7, T8 M8, T9 M9, T10 M10);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7, T8 M8, T9 M9, T10 M10, T11 M11);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7, T8 M8, T9 M9, T10 M10, T11 M11, T12 M12);

/// A [`Handler`] erased to a [`Function`].
pub(crate) struct HandlerFunction<H, M> {
    handler: H,
    _marker: PhantomData<fn() -> M>,
}

impl<H, M> HandlerFunction<H, M> {
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler,
            _marker: PhantomData,
        }
    }
}

impl<H: Handler<M>, M: 'static> Function for HandlerFunction<H, M> {
    fn kind(&self) -> FunctionKind {
        self.handler.kind()
    }

    fn call(
        &self,
        input: &Input<'_>,
        output: Codec,
    ) -> BoxFuture<'static, Result<Outcome, FunctionError>> {
        self.handler.call(input, output)
    }
}
