//! `#[bindery::function]` registers functions that `App` finds without a
//! hand-kept list, under their own name or the one given.

use bindery::FunctionKind;
use bindery::prelude::*;

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
}

#[bindery::function]
async fn enrich(order: Order) -> Order {
    order
}

#[bindery::function(name = "audit-log")]
async fn audit(_order: Order, _headers: Headers) {}

#[bindery::function]
async fn heartbeat() -> u64 {
    1
}

#[test]
fn registered_functions_are_found_by_name_with_their_kind() {
    let app = App::builder()
        .config_toml("[bindery]\ndefinition = \"enrich;audit-log;heartbeat\"\n")
        .env(Vec::<(String, String)>::new())
        .build()
        .expect("the macro registered all three");
    let kinds: Vec<(String, FunctionKind)> = app
        .wiring()
        .functions
        .iter()
        .map(|f| (f.definition.clone(), f.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("enrich".to_owned(), FunctionKind::Processor),
            ("audit-log".to_owned(), FunctionKind::Sink),
            ("heartbeat".to_owned(), FunctionKind::Source),
        ]
    );
}

#[test]
fn the_function_stays_callable_as_written() {
    let order = futures_lite_block_on(enrich(Order { id: 3 }));
    assert_eq!(order.id, 3);
}

fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn compile_errors_are_spanned_and_explain_themselves() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass_*.rs");
    cases.compile_fail("tests/ui/fail_*.rs");
}
